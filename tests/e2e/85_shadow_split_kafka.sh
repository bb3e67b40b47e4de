#!/usr/bin/env bash
# Device shadows in the distributed deployment, against the real Kafka broker and Redis that
# ops/test.sh starts: the operator writes desired state through `registry ingest` and the device,
# connected over MQTT to front end 2, receives the delta; it reports over MQTT through front end
# 1 (accepted, seen by its connection on front end 2), a stale version is refused on either
# path, and a device subscribing on front end 1 gets the pending delta at once.
source "$E2E_LIB"
start_split "shadow$$"
CA_SERVER="$DATA/server-ca.pem"
P="$WORK/pki"
mkdir -p "$P"
source "$(dirname "$E2E_LIB")/pki.sh"

req POST "$ING/tenants" "$ADMIN" '{"name":"split-shadow"}'; expect 201; T=$(field "b['token']")
factory_ca factory
req POST "$ING/factory-cas" "$T" "{\"pem\":$(jstr "$P/factory.pem")}"; expect 201
req POST "$ING/manifests" "$T" '{"device_type":"fan","serials":["Q-1"]}'; expect 201
factory_cert factory q1 "/CN=Q-1"
for i in $(seq 1 50); do # the front ends learn of the new factory CA through the bus
  dreq POST "$FRONT1_DEV/devices/provision" "$P/q1.pem" "$P/q1.key" '{"serial_number":"Q-1"}'
  [ "$STATUS" = 201 ] && break
  sleep 0.1
done
expect 201
D=$(field "b['device_id']"); save "b['certificate_pem']" "$P/d.pem"; save "b['private_key_pem']" "$P/d.key"
S="\$registry/devices/$D/shadow"
mq() { # mq PORT ARGS...: a mosquitto client of the device on front end PORT
  local port=$1; shift
  "$@" -h 127.0.0.1 -p "$port" --cafile "$CA_SERVER" --insecure --cert "$P/d.pem" --key "$P/d.key" -i "$D" -q 1
}
wait_suback() {
  local i
  for i in $(seq 1 100); do grep -q "SUBACK" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
# payloads FILE: the JSON payloads a `mosquitto_sub -d -v` logged, one {"topic", "m"} per line.
payloads() {
  python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    topic, _, payload = line.strip().partition(" ")
    if topic.startswith("$registry/") and payload.startswith("{"):
        print(json.dumps({"topic": topic.split("/shadow/", 1)[1], "m": json.loads(payload)}))
PY
}
check() {
  if python3 -c "
import json,sys
m=[json.loads(l) for l in sys.stdin if l.strip()]
sys.exit(0 if ($2) else 1)" < <(payloads "$1") 2>/dev/null; then pass; else fail "${CONTEXT:-} '$2' false for: $(cat "$1")"; fi
}

# -C 4: accepted and delta for the desired update (version 1), accepted and delta for the report.
CONTEXT="desired written through ingest: the delta reaches the device on front 2"
stdbuf -oL mosquitto_sub -d -v -h 127.0.0.1 -p "$FRONT2_MQTT" --cafile "$CA_SERVER" --insecure --cert "$P/d.pem" \
  --key "$P/d.key" -i "$D" -q 1 -t "$S/update/delta" -t "$S/update/accepted" -C 4 -W 30 > "$WORK/front2.out" 2>&1 &
sub=$!
wait_suback "$WORK/front2.out" || fail "no SUBACK: $(cat "$WORK/front2.out")"
req PUT "$ING/devices/$D/shadow/desired" "$T" '{"desired":{"speed":3,"mode":"eco"}}'
expect 200 "b['version']==1 and b['delta']=={'speed':3,'mode':'eco'}"

CONTEXT="the device reports over MQTT through front 1; its connection on front 2 sees it accepted"
for i in $(seq 1 50); do grep -q '"version":1' "$WORK/front2.out" && break; sleep 0.1; done
mq "$FRONT1_MQTT" mosquitto_pub -t "$S/update" -m '{"state":{"reported":{"speed":3}},"version":1,"clientToken":"k-1"}' \
  2> "$WORK/pub.err" || fail "publish on front 1: $(cat "$WORK/pub.err")"
wait "$sub" || true
check "$WORK/front2.out" "any(x['topic']=='update/delta' and x['m']['state']=={'speed':3,'mode':'eco'} and x['m']['version']==1 for x in m)"
check "$WORK/front2.out" "any(x['topic']=='update/accepted' and x['m']['version']==2 and x['m']['clientToken']=='k-1' for x in m)"
check "$WORK/front2.out" "any(x['topic']=='update/delta' and x['m']['state']=={'mode':'eco'} and x['m']['version']==2 for x in m)"

CONTEXT="a stale version over MQTT on front 2: rejected 409"
stdbuf -oL mosquitto_sub -d -v -h 127.0.0.1 -p "$FRONT2_MQTT" --cafile "$CA_SERVER" --insecure --cert "$P/d.pem" \
  --key "$P/d.key" -i "$D" -q 1 -t "$S/update/rejected" -C 1 -W 30 > "$WORK/rej.out" 2>&1 &
sub=$!
wait_suback "$WORK/rej.out" || fail "no SUBACK: $(cat "$WORK/rej.out")"
mq "$FRONT2_MQTT" mosquitto_pub -t "$S/update" -m '{"state":{"reported":{"mode":"eco"}},"version":1,"clientToken":"k-2"}' \
  2> "$WORK/pub.err" || true
wait "$sub" || true
check "$WORK/rej.out" "m[0]['topic']=='update/rejected' and m[0]['m']['code']==409 and m[0]['m']['clientToken']=='k-2'"

CONTEXT="HTTPS on front 1: reported with the right and a stale version"
dreq POST "$FRONT1_DEV/devices/$D/shadow/reported" "$P/d.pem" "$P/d.key" '{"reported":{"mode":"eco"},"version":2}'
expect 200 "b['version']==3 and b['delta']=={}"
dreq POST "$FRONT1_DEV/devices/$D/shadow/reported" "$P/d.pem" "$P/d.key" '{"reported":{"mode":"x"},"version":2}'
expect 409 "b['current_version']==3"
dreq GET "$FRONT2_DEV/devices/$D/shadow" "$P/d.pem" "$P/d.key"; expect 200 "b['version']==3 and b['reported']=={'speed':3,'mode':'eco'}"

CONTEXT="the pending delta on subscribe, on front 1"
req PUT "$ING/devices/$D/shadow/desired" "$T" '{"desired":{"speed":5}}'; expect 200 "b['version']==4"
mq "$FRONT1_MQTT" mosquitto_sub -v -t "$S/update/delta" -C 1 -W 15 > "$WORK/pending.out" 2>&1 || true
check "$WORK/pending.out" "m[0]['m']['state']=={'speed':5} and m[0]['m']['version']==4"
CONTEXT="the operator reads the same document on every front end"
req GET "$FRONT1/devices/$D/shadow" "$T"; A=$BODY
req GET "$FRONT2/devices/$D/shadow" "$T"
expect 200 "b['version']==4 and b['delta']=={'speed':5}"
if [ "$A" = "$BODY" ]; then pass; else fail "fronts differ: $A vs $BODY"; fi

for r in FRONT2 FRONT1 ING PROJ; do stop_role "$r"; done
finish
