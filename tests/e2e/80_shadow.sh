#!/usr/bin/env bash
# Device shadows on the embedded default, with curl for the operator and the device's HTTPS port
# and Debian's mosquitto clients for the device over MQTT: the operator writes desired state and
# a connected device receives the delta; the device reports with the version it saw (accepted,
# the delta shrinks) or a stale one (rejected 409); an offline device gets its pending delta as
# soon as it subscribes; shadow/get; optimistic concurrency (of 20 writers with one version,
# exactly one wins); bad input of every kind; and the view rebuilt from the events log holds the
# same documents (registry verify).
source "$E2E_LIB"
DATA="$WORK/data"
start_role API serve --data "$DATA" --shadow-max-bytes 2048
CA_SERVER="$DATA/server-ca.pem"
P="$WORK/pki"
mkdir -p "$P"
source "$(dirname "$E2E_LIB")/pki.sh"
M=(-h 127.0.0.1 -p "$API_MQTT" --cafile "$CA_SERVER" --insecure)

req POST "$API/tenants" "$ADMIN" '{"name":"shadows"}'; T=$(field "b['token']")
req POST "$API/tokens" "$T" '{"role":"viewer","name":"dash"}'; VIEWER=$(field "b['token']")
req POST "$API/tenants" "$ADMIN" '{"name":"other"}'; T_OTHER=$(field "b['token']")
devices_bootstrapped "$API" "$T" "$API_DEV" fan S 2
C1=(--cert "$P/d1.pem" --key "$P/d1.key" -i "$D1")
C2=(--cert "$P/d2.pem" --key "$P/d2.key" -i "$D2")
S1="\$registry/devices/$D1/shadow"
S2="\$registry/devices/$D2/shadow"

# check FILE EXPR: EXPR (python over m, the list of JSON messages in FILE, one per line) holds.
check() {
  if python3 -c "
import json,sys
m=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sys.exit(0 if ($2) else 1)" "$1" 2>/dev/null; then pass; else fail "${CONTEXT:-} '$2' false for: $(cat "$1")"; fi
}
# connected N: waits until N MQTT connections are up (then a moment for their SUBSCRIBE).
connected() {
  for i in $(seq 1 100); do
    req GET "$API/metrics" ""
    [ "$(echo "$BODY" | sed -n 's/^registry_mqtt_connections{state="connected"} //p')" = "$1" ] && break
    sleep 0.05
  done
  sleep 0.3
}

CONTEXT="a new shadow is empty at version 0"
req GET "$API/devices/$D1/shadow" "$T"
expect 200 "b['version']==0 and b['desired']=={} and b['reported']=={} and b['delta']=={}"

CONTEXT="desired -> the connected device's delta"
mosquitto_sub "${M[@]}" "${C1[@]}" -t "$S1/update/delta" -q 1 -C 1 -W 10 > "$WORK/delta1" 2>&1 &
sub=$!
connected 1
req PUT "$API/devices/$D1/shadow/desired" "$T" '{"desired":{"fan":{"speed":2},"mode":"eco","led":[1,2]},"client_token":"op-1"}'
expect 200 "b['version']==1 and b['delta']=={'fan':{'speed':2},'mode':'eco','led':[1,2]} and b['desired']['mode']=='eco'"
wait "$sub" || true
check "$WORK/delta1" "m[0]['state']=={'fan':{'speed':2},'mode':'eco','led':[1,2]} and m[0]['version']==1 and m[0]['metadata']['mode']['timestamp']>0 and m[0]['clientToken']=='op-1'"
req GET "$API/devices/$D1" "$T"; expect 200 "b['shadow_version']==1"

CONTEXT="the device reports with the version it saw: accepted, the delta shrinks"
# -C 4: the pending delta (version 1) on subscribe, then accepted, documents and the new delta.
mosquitto_sub "${M[@]}" "${C1[@]}" -t "$S1/update/accepted" -t "$S1/update/delta" -t "$S1/update/documents" -v -q 1 -C 4 -W 10 > "$WORK/acc1" 2>&1 &
sub=$!
connected 1
mosquitto_pub "${M[@]}" "${C1[@]}" -t "$S1/update" -q 1 \
  -m '{"state":{"reported":{"fan":{"speed":2},"led":[1,2]}},"version":1,"clientToken":"dev-1"}' 2> "$WORK/pub.err" \
  || true
wait "$sub" || true
python3 - "$WORK/acc1" > "$WORK/acc1.json" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    topic, _, payload = line.strip().partition(" ")
    if topic: print(json.dumps({"topic": topic.rsplit("/", 1)[-1], "m": json.loads(payload)}))
PY
check "$WORK/acc1.json" "any(x['topic']=='accepted' and x['m']['version']==2 and x['m']['clientToken']=='dev-1' and x['m']['state']=={'reported':{'fan':{'speed':2},'led':[1,2]}} and x['m']['metadata']['reported']['fan']['speed']['timestamp']>0 for x in m)"
check "$WORK/acc1.json" "any(x['topic']=='delta' and x['m']['state']=={'mode':'eco'} and x['m']['version']==2 for x in m)"
check "$WORK/acc1.json" "any(x['topic']=='documents' and x['m']['previous']['version']==1 and x['m']['current']['version']==2 and x['m']['current']['state']['reported']['led']==[1,2] for x in m)"
req GET "$API/devices/$D1/shadow" "$T"
expect 200 "b['version']==2 and b['delta']=={'mode':'eco'} and b['metadata']['desired']['fan']['speed']['timestamp']>0 and b['last_updated_at'].endswith('Z')"

CONTEXT="a stale version over MQTT: rejected 409, nothing changes"
mosquitto_sub "${M[@]}" "${C1[@]}" -t "$S1/update/rejected" -q 1 -C 1 -W 10 > "$WORK/rej1" 2>&1 &
sub=$!
connected 1
mosquitto_pub "${M[@]}" "${C1[@]}" -t "$S1/update" -q 1 \
  -m '{"state":{"reported":{"mode":"eco"}},"version":1,"clientToken":"dev-2"}' 2> "$WORK/pub.err" || true
wait "$sub" || true
check "$WORK/rej1" "m[0]['code']==409 and m[0]['clientToken']=='dev-2' and 'version' in m[0]['message']"
req GET "$API/devices/$D1/shadow" "$T"; expect 200 "b['version']==2 and 'mode' not in b['reported']"

CONTEXT="bad updates over MQTT: update/rejected 400"
mosquitto_sub "${M[@]}" "${C1[@]}" -t "$S1/update/rejected" -q 1 -C 3 -W 10 > "$WORK/rej2" 2>&1 &
sub=$!
connected 1
for msg in '{"state":{"reported":{"a":1},"extra":{}},"clientToken":"x-1"}' 'not json' \
           '{"state":{"reported":{"a":[1,null]}},"clientToken":"x-3"}'; do
  mosquitto_pub "${M[@]}" "${C1[@]}" -t "$S1/update" -q 1 -m "$msg" 2> "$WORK/pub.err" || true
done
wait "$sub" || true
check "$WORK/rej2" "len(m)==3 and all(x['code']==400 for x in m) and m[0]['clientToken']=='x-1' and 'state' in m[0]['message'] and m[2]['clientToken']=='x-3'"

CONTEXT="the device over HTTPS: its shadow, reported with the right and a stale version"
dreq GET "$API_DEV/devices/$D1/shadow" "$P/d1.pem" "$P/d1.key"; expect 200 "b['version']==2"
dreq POST "$API_DEV/devices/$D1/shadow/reported" "$P/d1.pem" "$P/d1.key" '{"reported":{"mode":"eco"},"version":2}'
expect 200 "b['version']==3 and b['delta']=={} and set(b)=={'version','delta'}"
dreq POST "$API_DEV/devices/$D1/shadow/reported" "$P/d1.pem" "$P/d1.key" '{"reported":{"mode":"off"},"version":2}'
expect 409 "b['current_version']==3 and b['status']==409"
dreq POST "$API_DEV/devices/$D2/shadow/reported" "$P/d1.pem" "$P/d1.key" '{"reported":{"x":1}}'
expect 403
dreq GET "$API_DEV/devices/$D2/shadow" "$P/d1.pem" "$P/d1.key"; expect 403
dreq POST "$API_DEV/devices/$D1/shadow/reported" "" "" '{"reported":{"x":1}}'; expect 401

CONTEXT="null deletes, arrays are values, last write wins without a version"
req PUT "$API/devices/$D1/shadow/desired" "$T" '{"desired":{"mode":null,"led":[3]}}'
expect 200 "b['version']==4 and 'mode' not in b['desired'] and b['desired']['led']==[3] and b['delta']=={'led':[3]}"

CONTEXT="an offline device gets its pending delta when it subscribes"
req PUT "$API/devices/$D2/shadow/desired" "$T" '{"desired":{"firmware":"2.0.1"}}'; expect 200 "b['version']==1"
mosquitto_sub "${M[@]}" "${C2[@]}" -t "$S2/update/delta" -q 1 -C 1 -W 10 > "$WORK/delta2" 2>&1 || true
check "$WORK/delta2" "m[0]['state']=={'firmware':'2.0.1'} and m[0]['version']==1"
# TLS 1.3 connections leave OpenSSL after the handshake (common/tls13.c); TLS 1.2 stays in it.
mosquitto_sub "${M[@]}" --tls-version tlsv1.2 "${C2[@]}" -t "$S2/update/delta" -q 1 -C 1 -W 10 > "$WORK/delta2b" 2>&1 || true
check "$WORK/delta2b" "m[0]['state']=={'firmware':'2.0.1'} and m[0]['version']==1"

CONTEXT="shadow/get"
mosquitto_sub "${M[@]}" "${C2[@]}" -t "$S2/get/accepted" -q 1 -C 1 -W 10 > "$WORK/get2" 2>&1 &
sub=$!
connected 1
mosquitto_pub "${M[@]}" "${C2[@]}" -t "$S2/get" -q 1 -m '{"clientToken":"g-1"}' 2> "$WORK/pub.err" || true
wait "$sub" || true
check "$WORK/get2" "m[0]['state']['desired']=={'firmware':'2.0.1'} and m[0]['state']['delta']=={'firmware':'2.0.1'} and m[0]['version']==1 and m[0]['clientToken']=='g-1'"

CONTEXT="another device's shadow topic closes the connection"; rc=0
mosquitto_pub "${M[@]}" "${C1[@]}" -t "$S2/update" -q 1 -m '{"state":{"reported":{"x":1}}}' 2> "$WORK/fpub.err" || rc=$?
if [ "$rc" -ne 0 ]; then pass; else fail "foreign shadow publish accepted"; fi
req GET "$API/devices/$D2/shadow" "$T"; expect 200 "b['version']==1 and b['reported']=={}"

CONTEXT="of 20 writers with the same version, exactly one wins"
req GET "$API/devices/$D1/shadow" "$T"; V=$(field "b['version']")
writers=()
for i in $(seq 1 20); do
  curl -sS -o /dev/null -w '%{http_code}\n' --max-time 30 -X PUT -H "Authorization: Bearer $T" -H 'Content-Type: application/json' \
    --data-binary "{\"desired\":{\"writer\":$i},\"version\":$V}" "$API/devices/$D1/shadow/desired" >> "$WORK/race" &
  writers+=($!)
done
wait "${writers[@]}"
if [ "$(grep -c '^200$' "$WORK/race")" = 1 ] && [ "$(grep -c '^409$' "$WORK/race")" = 19 ]; then pass; else fail "race: $(sort "$WORK/race" | uniq -c)"; fi
req GET "$API/devices/$D1/shadow" "$T"; expect 200 "b['version']==$V+1"

CONTEXT="bad input over HTTP"
bad() { req PUT "$API/devices/$D1/shadow/desired" "$T" "$1"; expect "$2" "b['status']==$2 and '$3' in b['detail']"; }
bad '{"desired":5}' 400 desired
bad '{"desired":[1]}' 400 desired
bad '{"desired":{"a":1},"extra":1}' 400 'only desired'
bad '{"desired":{"a":1}' 400 JSON
bad '{"desired":{"a":1},"desired":{"b":2}}' 400 duplicate
bad '{"desired":{"a":{"b":{"c":{"d":{"e":{"f":{"g":1}}}}}}}}' 400 deep
bad '{"desired":{"a":[1,[2,null]]}}' 400 null
bad '{"desired":{"a":1},"version":-1}' 400 version
bad '{"desired":{"a":1},"version":"3"}' 400 version
bad '{"desired":{"a":1},"version":1.5}' 400 version
bad "{\"desired\":{\"a\":1},\"client_token\":\"$(printf 'x%.0s' $(seq 1 65))\"}" 400 client_token
bad '{"version":1}' 400 desired
req PUT "$API/devices/$D1/shadow/desired" "$T" '{"desired":{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}}'; expect 200
req PUT "$API/devices/$D1/shadow/desired" "$T" "{\"desired\":{\"big\":\"$(head -c 1900 /dev/zero | tr '\0' 'x')\"}}"; expect 200
CONTEXT="a small patch that would make the document too large: 413"
req PUT "$API/devices/$D1/shadow/desired" "$T" "{\"desired\":{\"more\":\"$(head -c 200 /dev/zero | tr '\0' 'y')\"}}"
expect 413 "'limit' in b['detail']"
req GET "$API/devices/$D1/shadow" "$T"; expect 200 "'more' not in b['desired']"
CONTEXT="isolation and roles"
req GET "$API/devices/$D1/shadow" "$T_OTHER"; expect 404
req PUT "$API/devices/$D1/shadow/desired" "$T_OTHER" '{"desired":{"a":1}}'; expect 404
req PUT "$API/devices/$D1/shadow/desired" "$VIEWER" '{"desired":{"a":1}}'; expect 403
req GET "$API/devices/$D1/shadow" "$VIEWER"; expect 200
req GET "$API/devices/00000000-0000-4000-8000-000000000000/shadow" "$T"; expect 404
req PUT "$API/devices/not-a-uuid/shadow/desired" "$T" '{"desired":{"a":1}}'; expect 400
req PUT "$API/devices/$D1/shadow/desired" "" '{"desired":{"a":1}}'; expect 401
req POST "$API/devices/$D1/shadow/desired" "$T" '{"desired":{"a":1}}'; expect 405

CONTEXT="a decommissioned device's shadow no longer changes"
req PATCH "$API/devices/$D2" "$T" '{"status":"decommissioned"}'; expect 200
req PUT "$API/devices/$D2/shadow/desired" "$T" '{"desired":{"firmware":"3.0.0"}}'; expect 409 "'decommissioned' in b['detail']"
req GET "$API/devices/$D2/shadow" "$T"; expect 200 "b['desired']=={'firmware':'2.0.1'}"

CONTEXT="the shadow outlives a restart and the view rebuilds from the events"
req GET "$API/devices/$D1/shadow" "$T"; BEFORE=$BODY
stop_role API
if "$REGISTRY_BIN" verify --data "$DATA" > "$WORK/verify.out" 2>&1; then pass; else fail "verify: $(cat "$WORK/verify.out")"; fi
start_role API serve --data "$DATA" --shadow-max-bytes 2048
req GET "$API/devices/$D1/shadow" "$T"
if [ "$BODY" = "$BEFORE" ]; then pass; else fail "after restart: $BODY vs $BEFORE"; fi
stop_role API
finish
