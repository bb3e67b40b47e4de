#!/usr/bin/env bash
# Credentials end to end on the embedded default, with stock tools only: `openssl` plays the
# manufacturer (factory CA, device keys, CSRs, factory certificates with the serial in the
# subject) and `curl` plays the device on the device HTTPS port. Covers the tenant's issuing CA,
# factory CAs, manifests (JSON and CSV), bootstrap with and without a CSR, activation, claims
# (including 50 concurrent redemptions of a max_uses=10 claim), renewal with and without an
# overlap window, rotation (scheduler and by hand), revocation (refused at once, a live
# keep-alive connection dropped), the CRL, tenant isolation, and bad input of each kind.
source "$E2E_LIB"
DATA="$WORK/data"
start_role API serve --data "$DATA" --rotation-check-ms 200
CA_SERVER="$DATA/server-ca.pem"
P="$WORK/pki"
mkdir -p "$P"

source "$(dirname "$E2E_LIB")/pki.sh"

# ---- the tenant and its issuing CA ----
CONTEXT="tenant"; req POST "$API/tenants" "$ADMIN" '{"name":"acme","cert_validity_days":30,"rotate_before_days":7,"overlap_days":1}'
expect 201
T=$(field "b['token']"); T_ID=$(field "b['tenant_id']")
req POST "$API/tenants" "$ADMIN" '{"name":"globex","overlap_days":0}'; expect 201
T2=$(field "b['token']")
CONTEXT="issuing CA"; req GET "$API/issuing-ca" "$T"; expect 200
printf '%s\n' "$BODY" > "$P/issuing.pem"
if openssl x509 -in "$P/issuing.pem" -noout -text | grep -q "CA:TRUE"; then pass; else fail "issuing CA is not a CA"; fi
if openssl x509 -in "$P/issuing.pem" -noout -text | grep -q "prime256v1"; then pass; else fail "issuing CA is not P-256"; fi
req GET "$API/issuing-ca" "$T2"; printf '%s\n' "$BODY" > "$P/issuing2.pem"
if ! cmp -s "$P/issuing.pem" "$P/issuing2.pem"; then pass; else fail "tenants share an issuing CA"; fi
if grep -rq "PRIVATE KEY" "$DATA" 2>/dev/null; then fail "a private key in plain text under the data directory"; else pass; fi

# ---- factory CAs ----
factory_ca acme-factory
factory_ca other-factory
CONTEXT="add factory CA"; req POST "$API/factory-cas" "$T" "{\"pem\":$(jstr "$P/acme-factory.pem")}"
expect 201 "len(b['ca_id'])==36 and len(b['fingerprint'])==64 and 'acme-factory' in b['subject'] and b['not_after'].endswith('Z')"
CA_ID=$(field "b['ca_id']")
CONTEXT="same CA again"; req POST "$API/factory-cas" "$T" "{\"pem\":$(jstr "$P/acme-factory.pem")}"; expect 409
CONTEXT="list factory CAs"; req GET "$API/factory-cas" "$T"; expect 200 "len(b['items'])==1 and b['items'][0]['ca_id']=='$CA_ID' and b['next_cursor'] is None"
CONTEXT="other tenant sees none"; req GET "$API/factory-cas" "$T2"; expect 200 "b['items']==[]"
req GET "$API/factory-cas/$CA_ID" "$T2"; expect 404
factory_cert acme-factory leaf "/CN=not-a-ca"
CONTEXT="leaf as CA"; req POST "$API/factory-cas" "$T" "{\"pem\":$(jstr "$P/leaf.pem")}"; expect 400 "'CA' in b['detail']"
CONTEXT="garbage PEM"; req POST "$API/factory-cas" "$T" '{"pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}'; expect 400
CONTEXT="no pem"; req POST "$API/factory-cas" "$T" '{}'; expect 400 "'pem' in b['detail']"
CONTEXT="viewer cannot add"; req POST "$API/tokens" "$T" '{"role":"viewer","name":"v"}'; V=$(field "b['token']")
req POST "$API/factory-cas" "$V" "{\"pem\":$(jstr "$P/other-factory.pem")}"; expect 403

# ---- manifests ----
CONTEXT="manifest JSON"; req POST "$API/manifests" "$T" '{"device_type":"meter","hardware_revision":"r2","serials":["SN-1","SN-2","SN-3","SN-1"]}'
expect 201 "b['count']==3 and b['duplicates']==1 and len(b['manifest_id'])==36"
CONTEXT="manifest again"; req POST "$API/manifests" "$T" '{"device_type":"meter","serials":["SN-1","SN-4"]}'
expect 201 "b['count']==1 and b['duplicates']==1"
CONTEXT="manifest CSV"; req POST "$API/manifests" "$T" $'serial_number,device_type,hardware_revision\nSN-5,valve,r1\nSN-6,meter\n\nSN-7,valve,r1\n' text/csv
expect 201 "b['count']==3 and b['duplicates']==0"
CONTEXT="CSV bad row"; req POST "$API/manifests" "$T" $'SN-8,meter\nSN-9\n' text/csv; expect 400 "'row 2' in b['detail']"
CONTEXT="CSV bad serial"; req POST "$API/manifests" "$T" $'SN-8,meter\n"x y",meter\n' text/csv; expect 400 "'row 2' in b['detail']"
CONTEXT="manifest bad serial"; req POST "$API/manifests" "$T" '{"device_type":"m","serials":["ok",7]}'; expect 400 "'serials[1]' in b['detail']"
CONTEXT="manifest empty"; req POST "$API/manifests" "$T" '{"device_type":"m","serials":[]}'; expect 400
CONTEXT="manifest garbage"; req POST "$API/manifests" "$T" 'not json at all'; expect 400
CONTEXT="manifest media type"; req POST "$API/manifests" "$T" 'x' text/plain; expect 415
CONTEXT="big manifest"
python3 -c "
import json; print(json.dumps({'device_type':'tag','serials':['BULK-%06d'%i for i in range(20000)]}))" > "$P/big.json"
STATUS=$(curl -sS -o "$WORK/body" -w '%{http_code}' -X POST -H "Authorization: Bearer $T" -H 'Content-Type: application/json' --data-binary @"$P/big.json" "$API/manifests")
BODY=$(cat "$WORK/body"); expect 201 "b['count']==20000 and b['parts']>=4"

# ---- bootstrap with a factory certificate ----
factory_cert acme-factory sn1 "/CN=SN-1/serialNumber=SN-1"
CONTEXT="no client cert"; dreq POST "$API_DEV/devices/provision" "" "" '{"serial_number":"SN-1"}'; expect 401
CONTEXT="provision without CSR"; dreq POST "$API_DEV/devices/provision" "$P/sn1.pem" "$P/sn1.key" '{"serial_number":"SN-1"}'
expect 201 "len(b['device_id'])==36 and 'BEGIN CERTIFICATE' in b['certificate_pem'] and 'PRIVATE KEY' in b['private_key_pem'] and 'BEGIN CERTIFICATE' in b['ca_chain_pem']"
D1=$(field "b['device_id']"); save "b['certificate_pem']" "$P/d1.pem"; save "b['private_key_pem']" "$P/d1.key"
if openssl verify -CAfile "$P/issuing.pem" "$P/d1.pem" >/dev/null 2>&1; then pass; else fail "openssl verify of the issued certificate"; fi
if openssl x509 -in "$P/d1.pem" -noout -subject | grep -q "CN *= *$D1"; then pass; else fail "CN is not the device id"; fi
if openssl x509 -in "$P/d1.pem" -noout -text | grep -q "TLS Web Client Authentication"; then pass; else fail "no clientAuth EKU"; fi
CONTEXT="operator sees provisioning"; req GET "$API/devices/$D1" "$T"
expect 200 "b['status']=='provisioning' and b['serial_number']=='SN-1' and b['device_type']=='meter' and b['hardware_revision']=='r2' and len(b['certificates'])==1"
CONTEXT="provision retry: same device"; dreq POST "$API_DEV/devices/provision" "$P/sn1.pem" "$P/sn1.key" '{"serial_number":"SN-1"}'
expect 201 "b['device_id']=='$D1'"
save "b['certificate_pem']" "$P/d1b.pem"; save "b['private_key_pem']" "$P/d1b.key"
CONTEXT="reconnect: activation"; dreq GET "$API_DEV/devices/$D1" "$P/d1b.pem" "$P/d1b.key"
expect 200 "b['device_id']=='$D1' and b['status']=='active'"
req GET "$API/devices/$D1" "$T"; expect 200 "b['status']=='active'"
CONTEXT="last_seen_at"; seen=0
for i in $(seq 1 50); do
  req GET "$API/devices/$D1" "$T"
  if python3 -c "import json,sys; sys.exit(0 if json.loads(sys.argv[1])['last_seen_at'] else 1)" "$BODY"; then seen=1; break; fi
  sleep 0.1
done
if [ "$seen" = 1 ]; then pass; else fail "last_seen_at not written: $BODY"; fi
expect 200 "b['last_seen_at'].endswith('Z') and b['status']=='active'"
CONTEXT="certificates"; req GET "$API/devices/$D1/certificates" "$T"
expect 200 "len(b)==2 and [c['is_primary'] for c in b]==[False,True] and b[0]['status']=='superseded' and b[1]['status']=='active'"
CERT_D1B=$(field "b[1]['cert_id']")
CONTEXT="another device's record"; factory_cert acme-factory sn2 "/CN=SN-2"
csr d2
dreq POST "$API_DEV/devices/provision" "$P/sn2.pem" "$P/sn2.key" "{\"serial_number\":\"SN-2\",\"csr\":$(jstr "$P/d2.csr")}"
expect 201 "'private_key_pem' not in b"
D2=$(field "b['device_id']"); save "b['certificate_pem']" "$P/d2.pem"
if openssl x509 -in "$P/d2.pem" -noout -pubkey | cmp -s - <(openssl pkey -in "$P/d2.key" -pubout); then pass; else fail "the certificate is not for the CSR's key"; fi
CONTEXT="device reads another device"; dreq GET "$API_DEV/devices/$D2" "$P/d1b.pem" "$P/d1b.key"; expect 403
CONTEXT="factory cert is not operational"; dreq GET "$API_DEV/devices/$D1" "$P/sn1.pem" "$P/sn1.key"; expect 401

# ---- bootstrap refusals ----
factory_cert acme-factory sn99 "/CN=SN-99"
CONTEXT="serial not in manifest"; dreq POST "$API_DEV/devices/provision" "$P/sn99.pem" "$P/sn99.key" '{"serial_number":"SN-99"}'; expect 403 "'manifest' in b['detail']"
CONTEXT="subject does not match"; dreq POST "$API_DEV/devices/provision" "$P/sn2.pem" "$P/sn2.key" '{"serial_number":"SN-3"}'; expect 403 "'subject' in b['detail']"
factory_cert other-factory sn3x "/CN=SN-3"
CONTEXT="unknown CA: TLS refusal"; dreq POST "$API_DEV/devices/provision" "$P/sn3x.pem" "$P/sn3x.key" '{"serial_number":"SN-3"}'
if [ "$CURL_RC" -ne 0 ] || [ "$STATUS" = 403 ]; then pass; else fail "unknown CA accepted: $STATUS $BODY"; fi
CONTEXT="another tenant's CA"; req POST "$API/factory-cas" "$T2" "{\"pem\":$(jstr "$P/other-factory.pem")}"; expect 201
dreq POST "$API_DEV/devices/provision" "$P/sn3x.pem" "$P/sn3x.key" '{"serial_number":"SN-3"}'; expect 403
CONTEXT="expired factory certificate"; dated_cert acme-factory old3 "/CN=SN-3" 20200101000000Z 20200102000000Z
dreq POST "$API_DEV/devices/provision" "$P/old3.pem" "$P/old3.key" '{"serial_number":"SN-3"}'
if [ -s "$P/old3.pem" ] && { [ "$CURL_RC" -ne 0 ] || [ "$STATUS" = 403 ]; }; then pass; else fail "expired certificate accepted: $STATUS $BODY"; fi
CONTEXT="not yet valid factory certificate"; dated_cert acme-factory new3 "/CN=SN-3" 20990101000000Z 20990102000000Z
dreq POST "$API_DEV/devices/provision" "$P/new3.pem" "$P/new3.key" '{"serial_number":"SN-3"}'
if [ -s "$P/new3.pem" ] && { [ "$CURL_RC" -ne 0 ] || [ "$STATUS" = 403 ]; }; then pass; else fail "future certificate accepted: $STATUS $BODY"; fi
factory_cert acme-factory sn3 "/CN=SN-3"
CONTEXT="CSR with a bad signature"
python3 - "$P/d2.csr" "$P/bad.csr" <<'PY'
import base64, sys
t = open(sys.argv[1]).read().split('\n')
der = bytearray(base64.b64decode(''.join(l for l in t if l and not l.startswith('-----'))))
der[-3] ^= 0x55
b = base64.b64encode(bytes(der)).decode()
open(sys.argv[2], 'w').write('-----BEGIN CERTIFICATE REQUEST-----\n' + '\n'.join(b[i:i+64] for i in range(0, len(b), 64)) + '\n-----END CERTIFICATE REQUEST-----\n')
PY
dreq POST "$API_DEV/devices/provision" "$P/sn3.pem" "$P/sn3.key" "{\"serial_number\":\"SN-3\",\"csr\":$(jstr "$P/bad.csr")}"; expect 400 "'csr' in b['detail']"
CONTEXT="weak key"; openssl req -new -newkey rsa:1024 -nodes -keyout "$P/weak.key" -subj /CN=w -out "$P/weak.csr" 2>/dev/null
dreq POST "$API_DEV/devices/provision" "$P/sn3.pem" "$P/sn3.key" "{\"serial_number\":\"SN-3\",\"csr\":$(jstr "$P/weak.csr")}"; expect 400 "'csr' in b['detail']"
CONTEXT="malformed CSR"; dreq POST "$API_DEV/devices/provision" "$P/sn3.pem" "$P/sn3.key" '{"serial_number":"SN-3","csr":"-----BEGIN CERTIFICATE REQUEST-----\nzzzz\n-----END CERTIFICATE REQUEST-----"}'; expect 400
CONTEXT="garbage body"; dreq POST "$API_DEV/devices/provision" "$P/sn3.pem" "$P/sn3.key" '{"serial_number":'; expect 400
CONTEXT="unknown field"; dreq POST "$API_DEV/devices/provision" "$P/sn3.pem" "$P/sn3.key" '{"serial_number":"SN-3","x":1}'; expect 400
CONTEXT="RSA-2048 and Ed25519 CSRs accepted"
openssl req -new -newkey rsa:2048 -nodes -keyout "$P/rsa.key" -subj /CN=r -out "$P/rsa.csr" 2>/dev/null
dreq POST "$API_DEV/devices/provision" "$P/sn3.pem" "$P/sn3.key" "{\"serial_number\":\"SN-3\",\"csr\":$(jstr "$P/rsa.csr")}"; expect 201
D3=$(field "b['device_id']")
openssl genpkey -algorithm ED25519 -out "$P/ed.key" 2>/dev/null; openssl req -new -key "$P/ed.key" -subj /CN=e -out "$P/ed.csr" 2>/dev/null
dreq POST "$API_DEV/devices/provision" "$P/sn3.pem" "$P/sn3.key" "{\"serial_number\":\"SN-3\",\"csr\":$(jstr "$P/ed.csr")}"; expect 201 "b['device_id']=='$D3'"
save "b['certificate_pem']" "$P/d3.pem"
CONTEXT="Ed25519 device authenticates"; dreq GET "$API_DEV/devices/$D3" "$P/d3.pem" "$P/ed.key"; expect 200 "b['status']=='active'"
CONTEXT="decommissioned: no new certificate"; req PATCH "$API/devices/$D3" "$T" '{"status":"decommissioned"}'; expect 200
dreq POST "$API_DEV/devices/provision" "$P/sn3.pem" "$P/sn3.key" '{"serial_number":"SN-3"}'; expect 403 "'decommissioned' in b['detail']"
CONTEXT="decommissioned: refused"; dreq GET "$API_DEV/devices/$D3" "$P/d3.pem" "$P/ed.key"; expect 403
CONTEXT="removed factory CA"; factory_cert acme-factory sn4 "/CN=SN-4"
req DELETE "$API/factory-cas/$CA_ID" "$T"; expect 200
dreq POST "$API_DEV/devices/provision" "$P/sn4.pem" "$P/sn4.key" '{"serial_number":"SN-4"}'
if [ "$CURL_RC" -ne 0 ] || [ "$STATUS" = 403 ]; then pass; else fail "removed CA still accepted: $STATUS $BODY"; fi
req POST "$API/factory-cas" "$T" "{\"pem\":$(jstr "$P/acme-factory.pem")}"; expect 201
dreq POST "$API_DEV/devices/provision" "$P/sn4.pem" "$P/sn4.key" '{"serial_number":"SN-4"}'; expect 201

# ---- claims ----
CONTEXT="claim"; req POST "$API/claims" "$T" '{"device_type":"sensor","max_uses":2,"ttl_seconds":600}'
expect 201 "b['claim_token'].startswith('rgt_') and b['max_uses']==2 and b['expires_at'].endswith('Z')"
CLAIM=$(field "b['claim_token']")
csr c1
CONTEXT="redeem"; dreq POST "$API_DEV/devices/claim" "" "" "{\"claim_token\":\"$CLAIM\",\"csr\":$(jstr "$P/c1.csr")}"
expect 201 "'private_key_pem' not in b"
C1=$(field "b['device_id']"); save "b['certificate_pem']" "$P/c1.pem"
req GET "$API/devices/$C1" "$T"; expect 200 "b['device_type']=='sensor' and b['status']=='provisioning'"
dreq GET "$API_DEV/devices/$C1" "$P/c1.pem" "$P/c1.key"; expect 200 "b['status']=='active'"
dreq POST "$API_DEV/devices/claim" "" "" "{\"claim_token\":\"$CLAIM\",\"csr\":$(jstr "$P/c1.csr")}"; expect 201
CONTEXT="used up"; dreq POST "$API_DEV/devices/claim" "" "" "{\"claim_token\":\"$CLAIM\",\"csr\":$(jstr "$P/c1.csr")}"; expect 403 "'used up' in b['detail']"
CONTEXT="unknown claim"; dreq POST "$API_DEV/devices/claim" "" "" "{\"claim_token\":\"rgt_nope\",\"csr\":$(jstr "$P/c1.csr")}"; expect 403
CONTEXT="claim needs a CSR"; dreq POST "$API_DEV/devices/claim" "" "" "{\"claim_token\":\"$CLAIM\"}"; expect 400
CONTEXT="claim expired"; req POST "$API/claims" "$T" '{"device_type":"sensor","max_uses":5,"ttl_seconds":1}'; EXP=$(field "b['claim_token']")
sleep 1.5
dreq POST "$API_DEV/devices/claim" "" "" "{\"claim_token\":\"$EXP\",\"csr\":$(jstr "$P/c1.csr")}"; expect 403 "'expired' in b['detail']"
CONTEXT="claim bad input"; req POST "$API/claims" "$T" '{"device_type":"s","max_uses":0,"ttl_seconds":5}'; expect 400
req POST "$API/claims" "$T" '{"device_type":"s","max_uses":1}'; expect 400
req POST "$API/claims" "$T" '{"device_type":"s","max_uses":1,"ttl_seconds":5,"expires_at":"2030-01-01T00:00:00Z"}'; expect 400
req POST "$API/claims" "$T" '{"device_type":"s","max_uses":1,"expires_at":"2001-01-01T00:00:00Z"}'; expect 400
CONTEXT="50 concurrent redemptions of max_uses=10"
req POST "$API/claims" "$T" '{"device_type":"swarm","max_uses":10,"ttl_seconds":600}'; RACE=$(field "b['claim_token']")
RACE_BODY="{\"claim_token\":\"$RACE\",\"csr\":$(jstr "$P/c1.csr")}"
racers=()
for i in $(seq 1 50); do
  curl -sS -o /dev/null -w '%{http_code}\n' --max-time 60 --cacert "$CA_SERVER" -X POST \
    -H 'Content-Type: application/json' --data-binary "$RACE_BODY" "$API_DEV/devices/claim" > "$WORK/race.$i" 2>/dev/null &
  racers+=($!)
done
for j in "${racers[@]}"; do wait "$j" 2>/dev/null || true; done
ok=$(cat "$WORK"/race.* | grep -c '^201$' || true); refused=$(cat "$WORK"/race.* | grep -c '^403$' || true)
if [ "$ok" = 10 ] && [ "$refused" = 40 ]; then pass; else fail "race: $ok succeeded, $refused refused (want 10 and 40)"; fi

# ---- renewal ----
CONTEXT="renew with the current certificate"; dreq POST "$API_DEV/devices/$D1/certificates/renew" "$P/d1b.pem" "$P/d1b.key" '{}'
expect 201 "b['device_id']=='$D1' and 'PRIVATE KEY' in b['private_key_pem']"
save "b['certificate_pem']" "$P/d1c.pem"; save "b['private_key_pem']" "$P/d1c.key"
CONTEXT="new certificate works"; dreq GET "$API_DEV/devices/$D1" "$P/d1c.pem" "$P/d1c.key"; expect 200
CONTEXT="old one within its overlap"; dreq GET "$API_DEV/devices/$D1" "$P/d1b.pem" "$P/d1b.key"; expect 200
req GET "$API/devices/$D1/certificates" "$T"; expect 200 "b[-1]['is_primary'] and b[-2]['status']=='superseded'"
CONTEXT="renew of another device"; dreq POST "$API_DEV/devices/$D2/certificates/renew" "$P/d1c.pem" "$P/d1c.key" '{}'; expect 403
CONTEXT="no overlap: old refused"
req POST "$API/factory-cas" "$T2" "{\"pem\":$(jstr "$P/acme-factory.pem")}"; expect 201
req POST "$API/manifests" "$T2" '{"device_type":"meter","serials":["G-1"]}'; expect 201
factory_cert acme-factory g1 "/CN=G-1"
dreq POST "$API_DEV/devices/provision" "$P/g1.pem" "$P/g1.key" '{"serial_number":"G-1"}'; expect 201
G1=$(field "b['device_id']"); save "b['certificate_pem']" "$P/g1op.pem"; save "b['private_key_pem']" "$P/g1op.key"
csr g1new
dreq POST "$API_DEV/devices/$G1/certificates/renew" "$P/g1op.pem" "$P/g1op.key" "{\"csr\":$(jstr "$P/g1new.csr")}"; expect 201 "'private_key_pem' not in b"
save "b['certificate_pem']" "$P/g1new.pem"
dreq GET "$API_DEV/devices/$G1" "$P/g1op.pem" "$P/g1op.key"; expect 401
dreq GET "$API_DEV/devices/$G1" "$P/g1new.pem" "$P/g1new.key"; expect 200
CONTEXT="tenant isolation"; req GET "$API/devices/$D1/certificates" "$T2"; expect 404
req POST "$API/certificates/$CERT_D1B/revoke" "$T2" '{}'; expect 404

# ---- rotation ----
CONTEXT="scheduler marks due"
req POST "$API/tenants" "$ADMIN" '{"name":"short","cert_validity_days":10,"rotate_before_days":30}'; T3=$(field "b['token']")
req POST "$API/factory-cas" "$T3" "{\"pem\":$(jstr "$P/acme-factory.pem")}"; expect 201
req POST "$API/manifests" "$T3" '{"device_type":"meter","serials":["S-1"]}'; expect 201
factory_cert acme-factory s1 "/CN=S-1"
dreq POST "$API_DEV/devices/provision" "$P/s1.pem" "$P/s1.key" '{"serial_number":"S-1"}'; expect 201
S1=$(field "b['device_id']")
due=0
for i in $(seq 1 50); do
  req GET "$API/devices/$S1/certificates" "$T3"
  if python3 -c "import json,sys; sys.exit(0 if json.loads(sys.argv[1])[0]['rotation_due'] else 1)" "$BODY"; then due=1; break; fi
  sleep 0.1
done
if [ "$due" = 1 ]; then pass; else fail "the scheduler did not mark the certificate due: $BODY"; fi
CONTEXT="rotate by hand"; req POST "$API/devices/$D2/certificates/rotate" "$T" ''; expect 200 "b['rotation_due']==True and b['device_id']=='$D2'"
req GET "$API/devices/$D2/certificates" "$T"; expect 200 "b[0]['rotation_due']==True"
req POST "$API/devices/$D3/certificates/rotate" "$T" ''; expect 403

# ---- revocation ----
CONTEXT="live connection before revocation"
live_then_revoke "$API_DEV" "$D1" "$P/d1c.pem" "$P/d1c.key" "$API" "$T" > "$WORK/live.out" 2>&1
if grep -q "^first 200" "$WORK/live.out" && grep -q "^revoke 200" "$WORK/live.out" && grep -q "^second closed" "$WORK/live.out"; then pass; else fail "live connection not dropped: $(cat "$WORK/live.out")"; fi
REVOKED=$(sed -n 's/^revoke 200 //p' "$WORK/live.out")
CONTEXT="revoked: refused"; dreq GET "$API_DEV/devices/$D1" "$P/d1c.pem" "$P/d1c.key"; expect 401 "'revoked' in b['detail']"
CONTEXT="revoked: cannot renew"; dreq POST "$API_DEV/devices/$D1/certificates/renew" "$P/d1c.pem" "$P/d1c.key" '{}'; expect 401
CONTEXT="revoke again"; req POST "$API/certificates/$REVOKED/revoke" "$T" ''; expect 200 "b['revoked']==True"
req GET "$API/devices/$D1/certificates" "$T"; expect 200 "[c['status'] for c in b if c['cert_id']=='$REVOKED']==['revoked']"
CONTEXT="revoke unknown"; req POST "$API/certificates/00000000-0000-4000-8000-000000000000/revoke" "$T" ''; expect 404
req POST "$API/certificates/nope/revoke" "$T" ''; expect 400
CONTEXT="CRL"; req GET "$API/crl" "$T"; expect 200
printf '%s\n' "$BODY" > "$P/crl.pem"
SERIAL=$(openssl x509 -in "$P/d1c.pem" -noout -serial | cut -d= -f2)
if openssl crl -in "$P/crl.pem" -noout -text | tr -d ' ' | grep -qi "SerialNumber:$SERIAL"; then pass; else fail "the CRL does not list $SERIAL"; fi
if openssl crl -in "$P/crl.pem" -CAfile "$P/issuing.pem" -noout 2>&1 | grep -q "verify OK"; then pass; else fail "the CRL does not verify"; fi
req GET "$API/crl" "$T2"; printf '%s\n' "$BODY" > "$P/crl2.pem"
if openssl crl -in "$P/crl2.pem" -noout -text | grep -q "No Revoked Certificates"; then pass; else fail "another tenant's CRL lists revocations"; fi

# ---- suspension ----
CONTEXT="activate"; dreq GET "$API_DEV/devices/$D2" "$P/d2.pem" "$P/d2.key"; expect 200 "b['status']=='active'"
CONTEXT="suspended device refused"; req PATCH "$API/devices/$D2" "$T" '{"status":"suspended"}'; expect 200
dreq GET "$API_DEV/devices/$D2" "$P/d2.pem" "$P/d2.key"; expect 403
req PATCH "$API/devices/$D2" "$T" '{"status":"active"}'; expect 200
dreq GET "$API_DEV/devices/$D2" "$P/d2.pem" "$P/d2.key"; expect 200

CONTEXT="metrics"; req GET "$API/metrics" ""
if grep -q 'registry_device_auth_total{tier="memory"} [1-9]' "$WORK/body" 2>/dev/null || echo "$BODY" | grep -q 'registry_device_auth_total{tier="memory"} [1-9]'; then pass; else fail "no in-process cache hits counted"; fi
if echo "$BODY" | grep -q 'registry_device_auth_total{tier="view"} [1-9]'; then pass; else fail "no view reads counted"; fi

CONTEXT="keys encrypted at rest"
if grep -rlq "BEGIN EC PRIVATE KEY\|BEGIN PRIVATE KEY" "$DATA"; then fail "plain private key under $DATA"; else pass; fi
if grep -rq -- "$(sed -n 2p "$P/d1c.key")" "$DATA" "$WORK/API.err" "$WORK/API.out"; then fail "a handed-out private key was stored or logged"; else pass; fi
stop_role API
finish
