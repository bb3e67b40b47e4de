#!/usr/bin/env bash
# Credentials in the distributed deployment, against the real Kafka broker and Redis that
# ops/test.sh starts: `registry project`, `registry ingest` and two `registry front` processes
# with device ports (given --kafka, the fronts append device bootstraps and activations
# themselves). A device bootstraps on one front end and authenticates on the other (which finds
# its certificate's status in Redis rather than its view); a revocation sent to the ingest process
# is refused at once on both front ends and drops the device's live connection on the other one.
source "$E2E_LIB"
start_split "pki$$"
CA_SERVER="$DATA/server-ca.pem"
P="$WORK/pki"
mkdir -p "$P"
source "$(dirname "$E2E_LIB")/pki.sh"

CONTEXT="tenant"; req POST "$ING/tenants" "$ADMIN" '{"name":"split-pki"}'; expect 201
T=$(field "b['token']")
factory_ca factory
CONTEXT="factory CA"; req POST "$ING/factory-cas" "$T" "{\"pem\":$(jstr "$P/factory.pem")}"; expect 201
CONTEXT="manifest"; req POST "$ING/manifests" "$T" '{"device_type":"meter","serials":["K-1","K-2"]}'; expect 201 "b['count']==2"
factory_cert factory k1 "/CN=K-1"

CONTEXT="bootstrap on front 1"
ok=0
for i in $(seq 1 50); do # the front ends learn of the new factory CA through the bus
  dreq POST "$FRONT1_DEV/devices/provision" "$P/k1.pem" "$P/k1.key" '{"serial_number":"K-1"}'
  if [ "$STATUS" = 201 ]; then ok=1; break; fi
  sleep 0.1
done
expect 201 "'PRIVATE KEY' in b['private_key_pem']"
D=$(field "b['device_id']"); save "b['certificate_pem']" "$P/d.pem"; save "b['private_key_pem']" "$P/d.key"
CONTEXT="authenticate on front 2 (activation)"; dreq GET "$FRONT2_DEV/devices/$D" "$P/d.pem" "$P/d.key"
expect 200 "b['status']=='active'"
CONTEXT="authenticate on front 1: from Redis"; dreq GET "$FRONT1_DEV/devices/$D" "$P/d.pem" "$P/d.key"; expect 200
req GET "$FRONT1/metrics" ""
if echo "$BODY" | grep -q 'registry_device_auth_total{tier="shared"} [1-9]'; then pass; else fail "front 1 did not use the shared cache: $(echo "$BODY" | grep device_auth)"; fi
CONTEXT="a TLS session from front 1 resumes on front 2 (their ticket keys come from the shared master key)"
h1=${FRONT1_DEV#https://}; h2=${FRONT2_DEV#https://}
openssl s_client -connect "$h1" -cert "$P/d.pem" -key "$P/d.key" -CAfile "$CA_SERVER" -sess_out "$WORK/tls.sess" \
  < <(sleep 1) > "$WORK/s1.out" 2>&1 || true
openssl s_client -connect "$h2" -cert "$P/d.pem" -key "$P/d.key" -CAfile "$CA_SERVER" -sess_in "$WORK/tls.sess" \
  < /dev/null > "$WORK/s2.out" 2>&1 || true
grep -q '^Reused, TLSv1.3' "$WORK/s2.out" && pass || fail "not resumed: $(grep -E '^(New|Reused)' "$WORK/s1.out" "$WORK/s2.out")"
CONTEXT="operator read on a front"; req GET "$FRONT2/devices/$D/certificates" "$T"; expect 200 "len(b)==1 and b[0]['status']=='active'"

# wait_suback FILE: until mosquitto_sub -d has logged its SUBACK.
wait_suback() {
  local i
  for i in $(seq 1 100); do grep -q "SUBACK" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
CONTEXT="MQTT: a message written through ingest reaches the device on front 2"
stdbuf -oL mosquitto_sub -d -h 127.0.0.1 -p "$FRONT2_MQTT" --cafile "$CA_SERVER" --insecure --cert "$P/d.pem" \
  --key "$P/d.key" -i "$D" -t "\$registry/devices/$D/certificates/rotate" -q 1 -C 1 -W 20 > "$WORK/rot.out" 2>&1 &
sub=$!
wait_suback "$WORK/rot.out" || fail "no SUBACK: $(cat "$WORK/rot.out")"
req POST "$ING/devices/$D/certificates/rotate" "$T" ''; expect 200 "b['rotation_due']==True"
wait "$sub" || true
if grep -q "\"renew_url\":\"/devices/$D/certificates/renew\"" "$WORK/rot.out"; then pass; else fail "no rotation notice: $(cat "$WORK/rot.out")"; fi
CONTEXT="MQTT: live connection on front 1 before the revocation"
stdbuf -oL mosquitto_sub -d -h 127.0.0.1 -p "$FRONT1_MQTT" --cafile "$CA_SERVER" --insecure --cert "$P/d.pem" \
  --key "$P/d.key" -i "$D" -t "\$registry/devices/$D/#" -W 60 > "$WORK/live1.out" 2>&1 &
live1=$!
wait_suback "$WORK/live1.out" || fail "no SUBACK on front 1: $(cat "$WORK/live1.out")"

CONTEXT="revoke through ingest, live connection on front 2"
live_then_revoke "$FRONT2_DEV" "$D" "$P/d.pem" "$P/d.key" "$ING" "$T" > "$WORK/live.out" 2>&1 || true
if grep -q "^first 200" "$WORK/live.out" && grep -q "^revoke 200" "$WORK/live.out" && grep -q "^second closed" "$WORK/live.out"; then pass; else fail "live connection: $(cat "$WORK/live.out")"; fi
CONTEXT="MQTT connection on front 1 closed within 1 s"
for i in $(seq 1 20); do kill -0 "$live1" 2>/dev/null || break; sleep 0.05; done
if ! kill -0 "$live1" 2>/dev/null; then pass; else fail "still connected on front 1"; kill "$live1"; fi
wait "$live1" 2>/dev/null || true
rc=0; mosquitto_sub -h 127.0.0.1 -p "$FRONT2_MQTT" --cafile "$CA_SERVER" --insecure --cert "$P/d.pem" \
  --key "$P/d.key" -i "$D" -t "\$registry/devices/$D/#" -C 1 -W 5 > /dev/null 2> "$WORK/mq.err" || rc=$?
if [ "$rc" -ne 0 ] && grep -qi "not author" "$WORK/mq.err"; then pass; else fail "revoked MQTT connect on front 2: rc=$rc $(cat "$WORK/mq.err")"; fi
CONTEXT="refused on front 1"; dreq GET "$FRONT1_DEV/devices/$D" "$P/d.pem" "$P/d.key"; expect 401 "'revoked' in b['detail']"
CONTEXT="refused on front 2"; dreq GET "$FRONT2_DEV/devices/$D" "$P/d.pem" "$P/d.key"; expect 401
CONTEXT="CRL on a front"; req GET "$FRONT1/crl" "$T"; expect 200
printf '%s\n' "$BODY" > "$P/crl.pem"
SERIAL=$(openssl x509 -in "$P/d.pem" -noout -serial | cut -d= -f2)
if openssl crl -in "$P/crl.pem" -noout -text | tr -d ' ' | grep -qi "SerialNumber:$SERIAL"; then pass; else fail "the CRL does not list $SERIAL"; fi

CONTEXT="claims across processes"
req POST "$ING/claims" "$T" '{"device_type":"sensor","max_uses":3,"ttl_seconds":600}'; expect 201
CLAIM=$(field "b['claim_token']")
csr c
codes=()
for f in "$FRONT1_DEV" "$FRONT2_DEV" "$FRONT1_DEV" "$FRONT2_DEV" "$FRONT1_DEV"; do
  dreq POST "$f/devices/claim" "" "" "{\"claim_token\":\"$CLAIM\",\"csr\":$(jstr "$P/c.csr")}"
  codes+=("$STATUS")
done
if [ "${codes[*]}" = "201 201 201 403 403" ]; then pass; else fail "claim redemptions: ${codes[*]}"; fi

for r in FRONT2 FRONT1 ING PROJ; do stop_role "$r"; done
finish
