# pki.sh - helpers for the credentials end-to-end tests, sourced after lib.sh: the `openssl`
# command line plays the manufacturer (CAs, keys, CSRs, factory certificates) and curl the device.
# Expects P (a folder for the files made) and CA_SERVER (the device port's CA, DATA/server-ca.pem).

# jstr FILE: the file's contents as a JSON string.
jstr() { python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$1"; }
# key FILE: a new P-256 key.
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
# factory_ca NAME: a self-signed CA like a manufacturer's.
factory_ca() {
  key "$P/$1.key"
  openssl req -x509 -new -key "$P/$1.key" -subj "/CN=$1/O=Acme Devices" -days 30 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -out "$P/$1.pem" 2>/dev/null
}
# factory_cert CA NAME SUBJECT: a device's factory certificate signed by CA.
factory_cert() {
  key "$P/$2.key"
  openssl req -new -key "$P/$2.key" -subj "$3" -out "$P/$2.csr" 2>/dev/null
  openssl x509 -req -in "$P/$2.csr" -CA "$P/$1.pem" -CAkey "$P/$1.key" -CAcreateserial -days 10 \
    -out "$P/$2.pem" 2>/dev/null
}
# csr NAME: a key and a CSR for it.
csr() {
  key "$P/$1.key"
  openssl req -new -key "$P/$1.key" -subj "/CN=$1" -out "$P/$1.csr" 2>/dev/null
}
# dreq METHOD URL CERT KEY [BODY]: a device request over mutual TLS (CERT "" for none); sets
# STATUS, BODY and CURL_RC.
dreq() {
  local method=$1 url=$2 cert=$3 k=$4 body=${5-}
  local args=(-sS -o "$WORK/body" -w '%{http_code}' -X "$method" --max-time 30 --cacert "$CA_SERVER")
  [ -n "$cert" ] && args+=(--cert "$cert" --key "$k")
  [ -n "$body" ] && args+=(-H "Content-Type: application/json" --data-binary "$body")
  CURL_RC=0
  STATUS=$(curl "${args[@]}" "$url" 2>"$WORK/curl.err") || CURL_RC=$?
  BODY=$(cat "$WORK/body" 2>/dev/null || true)
  rm -f "$WORK/body"
}
# save EXPR FILE: writes a string field of BODY to FILE.
save() { python3 -c "import json,sys; open(sys.argv[2],'w').write(eval(sys.argv[3], {'b': json.loads(sys.argv[1])}))" "$BODY" "$2" "$1"; }

# live_then_revoke DEVICE_URL DEVICE_ID CERT KEY API_URL TOKEN: opens a keep-alive connection
# with the device's certificate and reads its record ("first 200"), revokes the certificate
# through the operator API ("revoke 200 CERT_ID"), then tries the same connection again: "second
# closed ..." when the registry dropped it, "second STATUS" otherwise.
live_then_revoke() {
  python3 - "$1" "$2" "$3" "$4" "$CA_SERVER" "$5" "$6" <<'PY'
import http.client, json, ssl, sys, time, urllib.parse, urllib.request
dev, device, cert, key, ca, api, token = sys.argv[1:8]
u = urllib.parse.urlparse(dev)
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
ctx.load_cert_chain(cert, key)
c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
c.request("GET", "/devices/" + device)
r = c.getresponse(); r.read()
print("first", r.status, flush=True)
cert_id = None
req = urllib.request.Request(api + "/devices/" + device + "/certificates", headers={"Authorization": "Bearer " + token})
for cc in json.load(urllib.request.urlopen(req)):
    if cc["is_primary"]: cert_id = cc["cert_id"]
req = urllib.request.Request(api + "/certificates/" + cert_id + "/revoke", data=b'{"reason":"key compromise"}', method="POST",
                             headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
print("revoke", urllib.request.urlopen(req).status, cert_id, flush=True)
time.sleep(0.3)
try:
    c.request("GET", "/devices/" + device)
    r = c.getresponse(); r.read()
    print("second", r.status, flush=True)
except Exception as e:
    print("second closed", type(e).__name__, flush=True)
PY
}

# dated_cert CA NAME SUBJECT START END: a factory certificate valid only from START to END
# (YYYYMMDDHHMMSSZ), signed by CA with `openssl ca` (x509 -req cannot date a certificate).
dated_cert() {
  local db="$P/ca-db"
  mkdir -p "$db"
  [ -f "$db/index.txt" ] || { : > "$db/index.txt"; echo 1000 > "$db/serial"; }
  printf '[ca]\ndefault_ca=d\n[d]\ndatabase=%s/index.txt\nserial=%s/serial\nnew_certs_dir=%s\ndefault_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n' \
    "$db" "$db" "$db" > "$P/ca.cnf"
  key "$P/$2.key"
  openssl req -new -key "$P/$2.key" -subj "$3" -out "$P/$2.csr" 2>/dev/null
  openssl ca -batch -config "$P/ca.cnf" -cert "$P/$1.pem" -keyfile "$P/$1.key" -in "$P/$2.csr" \
    -out "$P/$2.pem" -startdate "$4" -enddate "$5" -notext >/dev/null 2>&1
}

# devices_bootstrapped API TOKEN DEVICE_URL TYPE PREFIX COUNT: registers a factory CA ("factory")
# and a manifest of serials PREFIX-1..COUNT for TOKEN's tenant, then bootstraps each device
# through DEVICE_URL with its factory certificate: device n's id goes into Dn, its operational
# certificate and key into $P/dn.pem and $P/dn.key.
devices_bootstrapped() {
  local api=$1 token=$2 dev=$3 type=$4 prefix=$5 count=$6 n serials
  factory_ca factory
  req POST "$api/factory-cas" "$token" "{\"pem\":$(jstr "$P/factory.pem")}"; expect 201
  serials=$(python3 -c "import json,sys; print(json.dumps(['%s-%d' % (sys.argv[1], i) for i in range(1, int(sys.argv[2]) + 1)]))" "$prefix" "$count")
  req POST "$api/manifests" "$token" "{\"device_type\":\"$type\",\"serials\":$serials}"; expect 201
  for n in $(seq 1 "$count"); do
    factory_cert factory f$n "/CN=$prefix-$n"
    dreq POST "$dev/devices/provision" "$P/f$n.pem" "$P/f$n.key" "{\"serial_number\":\"$prefix-$n\"}"; expect 201
    eval "D$n=$(field "b['device_id']")"
    save "b['certificate_pem']" "$P/d$n.pem"; save "b['private_key_pem']" "$P/d$n.key"
  done
}
