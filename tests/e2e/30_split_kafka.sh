#!/usr/bin/env bash
# The distributed deployment against the real Kafka broker and Redis that ops/test.sh starts:
# `registry project`, `registry ingest` and two `registry front` processes. Writes go to ingest,
# reads to the fronts (RocksDB secondaries): read-your-writes across processes, tenant isolation,
# kill -9 of the projector during writes (nothing answered is lost, nothing applied twice: the
# view equals the one rebuilt from the Kafka events topic), and a broker restart during writes
# (writes wait or fail clearly; none answered as accepted is lost).
source "$E2E_LIB"
: "${KAFKA_BROKERS:?the real broker is needed: run through ops/test.sh}"
: "${REDIS_ADDR:?Redis is needed: run through ops/test.sh}"
REGION="e2e$$"
DATA="$WORK/data"
COMMON=(--data "$DATA" --region "$REGION" --redis "$REDIS_ADDR")
start_role PROJ project "${COMMON[@]}" --kafka "$KAFKA_BROKERS"
start_role ING ingest "${COMMON[@]}" --kafka "$KAFKA_BROKERS"
start_role FRONT1 front "${COMMON[@]}"
start_role FRONT2 front "${COMMON[@]}"

CONTEXT="tenant via ingest"; req POST "$ING/tenants" "$ADMIN" '{"name":"split"}'; expect 201
T1=$(field "b['token']")
req POST "$ING/tenants" "$ADMIN" '{"name":"other"}'; expect 201
T2=$(field "b['token']")
CONTEXT="token usable on a front at once"; req POST "$ING/tokens" "$T1" '{"role":"viewer","name":"v"}'; expect 201
V1=$(field "b['token']")
for i in $(seq 1 20); do
  CONTEXT="write then read on front ($i)"
  req POST "$ING/devices" "$T1" "{\"serial_number\":\"S-$i\",\"device_type\":\"meter\",\"metadata\":{\"i\":\"$i\"}}"; expect 201
  D=$(field "b['device_id']")
  if [ $((i % 2)) = 0 ]; then F=$FRONT1; else F=$FRONT2; fi
  req GET "$F/devices/$D" "$V1"; expect 200 "b['metadata']=={'i':'$i'} and b['version']==1"
  req PATCH "$ING/devices/$D" "$T1" '{"status":"active"}'; expect 200 "b['version']==2"
  req GET "$F/devices/$D" "$V1"; expect 200 "b['status']=='active'"
done
CONTEXT="isolation on the front"; req GET "$FRONT1/devices/$D" "$T2"; expect 404
CONTEXT="front refuses writes"; req POST "$FRONT1/devices" "$T1" '{"serial_number":"x","device_type":"t"}'; expect 503
CONTEXT="duplicate serial"; req POST "$ING/devices" "$T1" '{"serial_number":"S-1","device_type":"meter"}'; expect 409
CONTEXT="projector metrics"; req GET "$PROJ/metrics" ""
grep -q 'registry_projector_commands_total{outcome="accepted"}' "$WORK/body" && pass || fail "metrics: $BODY"

answered() {
  local re='"device_id":"([0-9a-f-]{36})".*"version":([0-9]+)'
  [[ $1 =~ $re ]] && echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
}
# writer N TAG: registers devices through ingest until stopped, logging answered writes.
writer() {
  local n=$1 tag=$2 i out
  for i in $(seq 1 100000); do
    out=$(curl -s --max-time 40 -H "Authorization: Bearer $T1" -H 'Content-Type: application/json' \
      --data "{\"serial_number\":\"$tag-$n-$i\",\"device_type\":\"meter\"}" "$ING/devices") || true
    answered "$out" >> "$WORK/answered.$tag.$n" || echo "$out" >> "$WORK/refused.$tag.$n"
    [ -e "$WORK/stop.$tag" ] && return 0
  done
}
check_answered() {
  local tag=$1 missing=0 id ver
  cat "$WORK"/answered."$tag".* > "$WORK/all.$tag" 2>/dev/null || true
  local n; n=$(wc -l < "$WORK/all.$tag")
  [ "$n" -gt 10 ] && pass || fail "$tag: only $n writes answered"
  while read -r id ver; do
    req GET "$FRONT1/devices/$id" "$T1"
    [ "$STATUS" = 200 ] || missing=$((missing + 1))
  done < "$WORK/all.$tag"
  [ "$missing" -eq 0 ] && pass || fail "$tag: $missing of $n answered writes lost"
  echo "$tag: $n writes answered"
}

# kill -9 of the projector during writes.
for n in 1 2 3; do writer "$n" crash & done
sleep 3
kill -9 "$PROJ_PID"
sleep 2
start_role PROJ project "${COMMON[@]}" --kafka "$KAFKA_BROKERS"
sleep 3
touch "$WORK/stop.crash"; wait_writers() { local j; for j in $(jobs -p); do case " ${PIDS[*]} " in *" $j "*) ;; *) wait "$j" 2>/dev/null || true ;; esac; done; }
wait_writers
check_answered crash

# The broker restarts during writes: writes wait (or fail with a clear 503), none is lost.
for n in 1 2; do writer "$n" broker & done
sleep 2
"$E2E_OPS/kafka.sh" restart >/dev/null
sleep 3
touch "$WORK/stop.broker"; wait_writers
check_answered broker
if ls "$WORK"/refused.broker.* >/dev/null 2>&1; then
  # Anything not answered 201 must be a clear problem document.
  grep -v '"status":503' "$WORK"/refused.broker.* | grep -v '^$' > "$WORK/unclear" || true
  [ ! -s "$WORK/unclear" ] && pass || fail "unclear answers during the broker restart: $(head -3 "$WORK/unclear")"
fi
CONTEXT="after the restart"; req POST "$ING/devices" "$T1" '{"serial_number":"after","device_type":"meter"}'; expect 201

# The projector's view equals the one rebuilt from the Kafka events topic.
kill -TERM "$PROJ_PID"; wait "$PROJ_PID" 2>/dev/null || true
"$REGISTRY_BIN" verify --data "$DATA" --kafka "$KAFKA_BROKERS" --region "$REGION" > "$WORK/verify.out" 2>&1 || true
grep -q 'equals its events' "$WORK/verify.out" && pass || fail "verify: $(cat "$WORK/verify.out")"
stop_role ING
stop_role FRONT1
finish
