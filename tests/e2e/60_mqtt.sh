#!/usr/bin/env bash
# The MQTT device front end with real clients (Debian's mosquitto-clients) on the embedded
# default: a device connects with its operational certificate and receives what the registry
# sends it (a certificate rotation notice); the client id must be the certificate's device id;
# only the device's own topics; no certificate, revoked certificates and suspended devices are
# refused, and a live connection is closed within a second of a revocation or suspension; bad
# packets (raw, over TLS) close only their own connection.
source "$E2E_LIB"
DATA="$WORK/data"
start_role API serve --data "$DATA"
CA_SERVER="$DATA/server-ca.pem"
P="$WORK/pki"
mkdir -p "$P"
source "$(dirname "$E2E_LIB")/pki.sh"
M=(-h 127.0.0.1 -p "$API_MQTT" --cafile "$CA_SERVER" --insecure)

req POST "$API/tenants" "$ADMIN" '{"name":"mqtt"}'; T=$(field "b['token']")
devices_bootstrapped "$API" "$T" "$API_DEV" meter M 2
C1=(--cert "$P/d1.pem" --key "$P/d1.key")

CONTEXT="connect, activation, a message for the device"
mosquitto_sub "${M[@]}" "${C1[@]}" -i "$D1" -t "\$registry/devices/$D1/certificates/rotate" -q 1 -C 1 -W 15 \
  > "$WORK/rotate.out" 2> "$WORK/rotate.err" &
sub=$!
for i in $(seq 1 50); do
  req GET "$API/devices/$D1" "$T"
  if python3 -c "import json,sys; b=json.loads(sys.argv[1]); sys.exit(0 if b['status']=='active' and b['last_seen_at'] else 1)" "$BODY"; then break; fi
  sleep 0.1
done
expect 200 "b['status']=='active' and b['last_seen_at'] is not None"
req POST "$API/devices/$D1/certificates/rotate" "$T" ''; expect 200
wait "$sub" || true
if python3 -c "import json,sys; b=json.load(open(sys.argv[1])); sys.exit(0 if b['renew_url']=='/devices/$D1/certificates/renew' and b['expires_at'] else 1)" "$WORK/rotate.out"; then pass; else fail "rotation notice: $(cat "$WORK/rotate.out" "$WORK/rotate.err")"; fi

CONTEXT="wrong client id"; rc=0
mosquitto_sub "${M[@]}" "${C1[@]}" -i "$D2" -t "\$registry/devices/$D2/#" -C 1 -W 5 > /dev/null 2> "$WORK/wrongid.err" || rc=$?
if [ "$rc" -ne 0 ] && grep -qi "not author" "$WORK/wrongid.err"; then pass; else fail "wrong client id: rc=$rc $(cat "$WORK/wrongid.err")"; fi
CONTEXT="no client certificate"; rc=0
mosquitto_sub "${M[@]}" -i "$D1" -t "\$registry/devices/$D1/#" -C 1 -W 5 > /dev/null 2> "$WORK/nocert.err" || rc=$?
if [ "$rc" -ne 0 ]; then pass; else fail "no certificate accepted"; fi
CONTEXT="factory certificate is not an operational one"; rc=0
mosquitto_sub "${M[@]}" --cert "$P/f1.pem" --key "$P/f1.key" -i "$D1" -t "\$registry/devices/$D1/#" -C 1 -W 5 > /dev/null 2> "$WORK/factory.err" || rc=$?
if [ "$rc" -ne 0 ]; then pass; else fail "factory certificate accepted"; fi
CONTEXT="another device's topic: SUBACK failure"; rc=0
mosquitto_sub "${M[@]}" "${C1[@]}" -i "$D1" -t "\$registry/devices/$D2/#" -C 1 -W 5 > /dev/null 2> "$WORK/other.err" || rc=$?
if grep -qi "denied" "$WORK/other.err"; then pass; else fail "foreign subscription: rc=$rc $(cat "$WORK/other.err")"; fi
CONTEXT="wildcard beyond the device"; rc=0
mosquitto_sub "${M[@]}" "${C1[@]}" -i "$D1" -t "#" -C 1 -W 5 > /dev/null 2> "$WORK/wild.err" || rc=$?
if grep -qi "denied" "$WORK/wild.err"; then pass; else fail "wildcard: rc=$rc $(cat "$WORK/wild.err")"; fi
CONTEXT="own topic publish"; rc=0
mosquitto_pub "${M[@]}" "${C1[@]}" -i "$D1" -t "\$registry/devices/$D1/telemetry" -m '{"t":21}' -q 1 2> "$WORK/pub.err" || rc=$?
if [ "$rc" -eq 0 ]; then pass; else fail "own publish: rc=$rc $(cat "$WORK/pub.err")"; fi
CONTEXT="foreign publish closes the connection"; rc=0
mosquitto_pub "${M[@]}" "${C1[@]}" -i "$D1" -t "\$registry/devices/$D2/telemetry" -m x -q 1 2> "$WORK/fpub.err" || rc=$?
if [ "$rc" -ne 0 ]; then pass; else fail "foreign publish accepted"; fi

# mqtt_raw: a TLS connection with device 1's certificate sending the given hex packets; prints
# "closed" when the server closed the connection, else the hex it answered.
mqtt_raw() {
  python3 - "$API_MQTT" "$CA_SERVER" "$P/d1.pem" "$P/d1.key" "$@" <<'PY'
import socket, ssl, sys, time
port, ca, cert, key = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca); ctx.check_hostname = False
ctx.load_cert_chain(cert, key)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port))), server_hostname="x")
s.settimeout(3)
got = b""
try:
    for h in sys.argv[5:]:
        if h.startswith("sleep:"): time.sleep(float(h[6:])); continue
        s.sendall(bytes.fromhex(h))
        time.sleep(0.2)
    while True:
        d = s.recv(4096)
        if not d: print("closed", got.hex()); break
        got += d
except TimeoutError:  # before OSError, of which it is a kind
    print("open", got.hex())
except (ConnectionError, ssl.SSLError, OSError):
    print("closed", got.hex())
PY
}
connect_hex() { # CONNECT, clean session, keep-alive $2 s, client id $1
  python3 -c "
import sys
cid=sys.argv[1].encode(); ka=int(sys.argv[2])
vh=b'\x00\x04MQTT\x04\x02'+ka.to_bytes(2,'big')
pl=len(cid).to_bytes(2,'big')+cid
body=vh+pl
print((bytes([0x10,len(body)])+body).hex())" "$1" "$2"
}
CONN=$(connect_hex "$D1" 60)
CONTEXT="PUBLISH before CONNECT"; out=$(mqtt_raw 3005000178414141)
case "$out" in closed*) pass ;; *) fail "$out" ;; esac
CONTEXT="malformed remaining length"; out=$(mqtt_raw "$CONN" 30ffffffff01)
case "$out" in "closed 20020000"*) pass ;; *) fail "$out" ;; esac
CONTEXT="second CONNECT"; out=$(mqtt_raw "$CONN" "$CONN")
case "$out" in "closed 20020000"*) pass ;; *) fail "$out" ;; esac
CONTEXT="unknown packet type"; out=$(mqtt_raw "$CONN" f000)
case "$out" in "closed 20020000"*) pass ;; *) fail "$out" ;; esac
CONTEXT="QoS 2 refused"; out=$(mqtt_raw "$CONN" "$(python3 -c "
t=b'\$registry/devices/$D1/x'; b=len(t).to_bytes(2,'big')+t+b'\x00\x01hi'; print((bytes([0x34,len(b)])+b).hex())")")
case "$out" in "closed 20020000"*) pass ;; *) fail "$out" ;; esac
CONTEXT="packet over the maximum size"; out=$(mqtt_raw "$CONN" 3080808001)
case "$out" in "closed 20020000"*) pass ;; *) fail "$out" ;; esac
CONTEXT="ping"; out=$(mqtt_raw "$CONN" c000)
case "$out" in "open 20020000d000") pass ;; *) fail "$out" ;; esac
CONTEXT="keep-alive enforced"; out=$(mqtt_raw "$(connect_hex "$D1" 1)" sleep:2.5)
case "$out" in "closed 20020000") pass ;; *) fail "$out" ;; esac
CONTEXT="garbage instead of TLS"
python3 -c "
import socket; s=socket.create_connection(('127.0.0.1',$API_MQTT)); s.sendall(b'GET / HTTP/1.0\r\n\r\n'*10); s.settimeout(3)
try: print(len(s.recv(100)))
except Exception as e: print('err', e)" > "$WORK/garbage.out" 2>&1 || true
pass
CONTEXT="many connections opened and dropped"
python3 -c "
import socket
ss=[socket.create_connection(('127.0.0.1',$API_MQTT)) for _ in range(500)]
for s in ss: s.close()"
out=$(mqtt_raw "$CONN" c000); case "$out" in "open 20020000d000") pass ;; *) fail "server hurt: $out" ;; esac

CONTEXT="revocation closes a live connection within 1 s"
mosquitto_sub "${M[@]}" "${C1[@]}" -i "$D1" -t "\$registry/devices/$D1/#" -W 30 > /dev/null 2>&1 &
sub=$!
sleep 1
req GET "$API/devices/$D1/certificates" "$T"; CERT=$(field "[c['cert_id'] for c in b if c['is_primary']][0]")
start=$(date +%s.%N)
req POST "$API/certificates/$CERT/revoke" "$T" ''; expect 200
for i in $(seq 1 40); do kill -0 "$sub" 2>/dev/null || break; sleep 0.05; done
end=$(date +%s.%N)
if ! kill -0 "$sub" 2>/dev/null; then pass; else fail "the live subscriber is still connected"; kill "$sub"; fi
python3 -c "import sys; d=float(sys.argv[2])-float(sys.argv[1]); sys.exit(0 if d < 1.0 else 1)" "$start" "$end" && pass || fail "closed after more than 1 s"
wait "$sub" 2>/dev/null || true
rc=0; mosquitto_sub "${M[@]}" "${C1[@]}" -i "$D1" -t "\$registry/devices/$D1/#" -C 1 -W 5 > /dev/null 2> "$WORK/revoked.err" || rc=$?
if [ "$rc" -ne 0 ]; then pass; else fail "revoked certificate connected"; fi

CONTEXT="suspension closes a live connection"
C2=(--cert "$P/d2.pem" --key "$P/d2.key")
mosquitto_sub "${M[@]}" "${C2[@]}" -i "$D2" -t "\$registry/devices/$D2/#" -W 30 > /dev/null 2>&1 &
sub=$!
for i in $(seq 1 50); do
  req GET "$API/devices/$D2" "$T"
  python3 -c "import json,sys; sys.exit(0 if json.loads(sys.argv[1])['status']=='active' else 1)" "$BODY" && break
  sleep 0.1
done
req PATCH "$API/devices/$D2" "$T" '{"status":"suspended"}'; expect 200
for i in $(seq 1 20); do kill -0 "$sub" 2>/dev/null || break; sleep 0.05; done
if ! kill -0 "$sub" 2>/dev/null; then pass; else fail "the suspended device is still connected"; kill "$sub"; fi
rc=0; mosquitto_sub "${M[@]}" "${C2[@]}" -i "$D2" -t "\$registry/devices/$D2/#" -C 1 -W 5 > /dev/null 2> "$WORK/susp.err" || rc=$?
if [ "$rc" -ne 0 ] && grep -qi "not author" "$WORK/susp.err"; then pass; else fail "suspended device: rc=$rc $(cat "$WORK/susp.err")"; fi

CONTEXT="a certificate no tenant's CA issued fails the handshake"; rc=0
key "$P/stranger.key"
openssl req -x509 -new -key "$P/stranger.key" -subj "/CN=$D1" -days 1 -out "$P/stranger.pem" 2>/dev/null
mosquitto_sub "${M[@]}" --cert "$P/stranger.pem" --key "$P/stranger.key" -i "$D1" -t "\$registry/devices/$D1/#" -C 1 -W 5 > /dev/null 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then pass; else fail "a stranger's certificate connected"; fi

CONTEXT="metrics"; req GET "$API/metrics" ""
echo "$BODY" | grep -q 'registry_mqtt_connack_refused_total' && pass || fail "no MQTT metrics"
echo "$BODY" | grep -q 'registry_mqtt_handshake_failures_total{reason="certificate"} [1-9]' && pass || fail "handshake failures: $(echo "$BODY" | grep handshake_failures)"
echo "$BODY" | grep -q 'registry_mqtt_handshake_failures_total{reason="protocol"} [1-9]' && pass || fail "handshake failures: $(echo "$BODY" | grep handshake_failures)"
echo "$BODY" | grep -q 'registry_mqtt_tls_taken_over_total [1-9]' && pass || fail "no TLS 1.3 connection taken over from OpenSSL: $(echo "$BODY" | grep taken_over)"
stop_role API

CONTEXT="--max-mqtt-connections: connections beyond it are closed at once, the others kept"
start_role LIM serve --data "$WORK/limited" --max-mqtt-connections 20
python3 - "$LIM_MQTT" > "$WORK/limit.out" 2>&1 <<'PY' || true
import socket, sys, time
socks = []
for _ in range(30):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    socks.append(s)
    time.sleep(0.01)  # accepted in this order
time.sleep(1)
closed = 0
for s in socks:
    s.setblocking(False)
    try:
        closed += s.recv(1) == b""
    except BlockingIOError:
        pass  # still open, waiting for its TLS handshake
    except ConnectionResetError:
        closed += 1
print("closed", closed)
PY
grep -q '^closed 10$' "$WORK/limit.out" && pass || fail "$(cat "$WORK/limit.out")"
stop_role LIM
finish
