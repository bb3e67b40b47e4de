#!/usr/bin/env bash
# kill -9 of `registry serve` during a stream of writes, three times: after each restart every
# answered write is there, with at least the version it was answered with, and the view equals
# the one rebuilt from the events log (`registry verify`): nothing lost, nothing applied twice.
source "$E2E_LIB"
DATA="$WORK/data"
start_role API serve --data "$DATA" --log-segment-mb 1
req POST "$API/tenants" "$ADMIN" '{"name":"crash"}'; expect 201
TOKEN=$(field "b['token']")

# writer N: registers devices and updates their metadata, logging every answered write as
# "device_id version" to $WORK/answered.N (parsed with bash: a python per write is too slow), and
# the serial number of its last answered registration to $WORK/serial.N.
answered() {
  local re='"device_id":"([0-9a-f-]{36})".*"version":([0-9]+)'
  [[ $1 =~ $re ]] && echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
}
writer() {
  local n=$1 url=$2 i out id serial
  for i in $(seq 1 100000); do
    serial="w$n-$i-$RANDOM$RANDOM"
    out=$(curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      --data "{\"serial_number\":\"$serial\",\"device_type\":\"meter\"}" "$url/devices") || return 0
    answered "$out" >> "$WORK/answered.$n" || continue
    echo "$serial" > "$WORK/serial.$n"
    id=$(tail -n1 "$WORK/answered.$n" | cut -d' ' -f1)
    out=$(curl -s --max-time 5 -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      --data "{\"value\":\"$i\"}" "$url/devices/$id/metadata/n") || return 0
    answered "$out" >> "$WORK/answered.$n" || true
  done
}

for round in 1 2 3; do
  WPIDS=()
  for n in 1 2 3 4; do writer "$n" "$API" & WPIDS+=($!); done
  sleep 2
  kill -9 "$API_PID"
  for p in "${WPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  # Killed, the view is as it was at one commit: it equals the events it has applied.
  "$REGISTRY_BIN" verify --data "$DATA" > "$WORK/verify.out" 2>&1 &&
    grep -q 'equals its events' "$WORK/verify.out" && pass ||
    fail "round $round: the killed view: $(cat "$WORK/verify.out")"
  grep -h 'has applied the events before' "$WORK/verify.out" | sed "s/^/round $round: /" || true
  start_role API serve --data "$DATA" --log-segment-mb 1
  grep -h 'already have their events' "$WORK/API.err" | sed "s/^/round $round: /" || true
  # The first reads after the restart already see the last writes answered before the kill
  # (the view, unlogged, may have lost them and is decided again before anything is answered).
  for n in 1 2 3 4; do
    read -r id ver < <(tail -n1 "$WORK/answered.$n")
    req GET "$API/devices/$id" "$TOKEN"
    [ "$STATUS" = 200 ] && [ "$(field "b['version']")" -ge "$ver" ] && pass ||
      fail "round $round: writer $n's last answered write ($id v$ver) not read back at once"
    # Its last serial number is taken: the serials' filter (scanned at the start, then given
    # what is decided again) must not call it new.
    serial=$(cat "$WORK/serial.$n")
    req POST "$API/devices" "$TOKEN" "{\"serial_number\":\"$serial\",\"device_type\":\"meter\"}"
    expect 409
  done
done

cat "$WORK"/answered.* > "$WORK/all"
ANSWERED=$(wc -l < "$WORK/all")
[ "$ANSWERED" -gt 100 ] && pass || fail "only $ANSWERED writes answered"
# The highest answered version of each device must be at most the version now held.
MISSING=0
while read -r id ver; do
  req GET "$API/devices/$id" "$TOKEN"
  if [ "$STATUS" != 200 ]; then MISSING=$((MISSING + 1)); continue; fi
  have=$(field "b['version']")
  [ "$have" -ge "$ver" ] || MISSING=$((MISSING + 1))
done < <(sort -k1,1 -k2,2n "$WORK/all" | awk '{last[$1]=$2} END {for (k in last) print k, last[k]}')
[ "$MISSING" -eq 0 ] && pass || fail "$MISSING answered writes lost after kill -9"
echo "answered writes: $ANSWERED"

kill -TERM "$API_PID"; wait "$API_PID" 2>/dev/null || true
"$REGISTRY_BIN" verify --data "$DATA" > "$WORK/verify.out" 2>&1 && pass || { fail "verify failed"; cat "$WORK/verify.out"; }
grep -q 'equals its events' "$WORK/verify.out" && pass || fail "verify: $(cat "$WORK/verify.out")"
# serve's view is its own (no write-ahead log for secondaries to follow): a read-only front end
# on it is refused, saying why, rather than serving reads that miss the latest writes.
if timeout 30 "$REGISTRY_BIN" front --data "$DATA" --redis 127.0.0.1:9 --max-mqtt-connections 100 \
  --listen-api 127.0.0.1:0 --listen-device 127.0.0.1:0 --listen-mqtt 127.0.0.1:0 > "$WORK/front.out" 2>&1; then
  fail "a front end opened serve's unlogged view"
else
  grep -q 'written without a write-ahead log' "$WORK/front.out" && pass || fail "front: $(cat "$WORK/front.out")"
fi
finish
