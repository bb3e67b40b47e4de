#!/usr/bin/env bash
# bench_mqtt_fleet.sh - the 200,000-connection benchmark: the distributed deployment (`registry
# project`, `registry ingest` and FRONTS `registry front` processes sharing one MQTT port with
# SO_REUSEPORT, over the real Kafka broker and Redis) holding N mutual-TLS MQTT connections, each
# with its own device certificate, opened by as many load-generator processes; then a reconnect
# storm. Mosquitto 2.0 (Debian, require_certificate true), one process by design, is measured on
# the same certificates up to what one process may hold here. Run on demand:
#
#   tests/bench/bench_mqtt_fleet.sh BUILD_DIR [N [FRONTS [HOLD_SECONDS]]]   (200000, 12, 60)
#
# Why several processes: this sandbox's hard file-descriptor limit is 20,000 per process and it
# withholds CAP_SYS_RESOURCE, so neither one registry nor one load generator may hold more; a
# front end per core (and more) is also how the registry is deployed. Each front end gets N/FRONTS
# connections on average (the kernel spreads them by address hash).
#
# Steps: Kafka and Redis are started through ops/ unless they already answer; N devices are
# bootstrapped through the front ends' device ports (N/FRONTS each, in parallel); FRONTS load
# generators (tests/bench/bench_mqtt, each its own source address) connect N/FRONTS devices each,
# 16 at a time; once all are up the connections are held HOLD_SECONDS, counted, and the front
# ends' resident memory and CPU summed; then every load generator drops all its connections at
# once and reconnects them as fast as it can (64 attempts in flight each), resuming their TLS
# sessions. Exits non-zero when any connection failed.
set -euo pipefail
build=$(cd "${1:?usage: bench_mqtt_fleet.sh BUILD_DIR [N [FRONTS [HOLD_SECONDS]]]}" && pwd)
n=${2:-200000}
fronts=${3:-12}
hold=${4:-60}
here=$(cd "$(dirname "$0")" && pwd)
ops=$(cd "$here/../../ops" && pwd)
source "$here/fleet.sh"
fleet_workdir bench-fleet "$n"

if ! "$ops/redis.sh" status >/dev/null 2>&1; then "$ops/redis.sh" start >/dev/null; started+=(redis); fi
if ! "$ops/kafka.sh" status >/dev/null 2>&1; then "$ops/kafka.sh" start >/dev/null; started+=(kafka); fi
redis=127.0.0.1:${REDIS_PORT:-16379}
kafka=127.0.0.1:${KAFKA_PORT:-19092}
mqtt_port=$(fleet_free_port)
common=(--data "$work/data" --region "fleet$$" --redis "$redis" --kafka "$kafka")

fleet_role "$build" "$work" proj project "${common[@]}"
fleet_role "$build" "$work" ing ingest "${common[@]}"
api=$(sed -n 's/^listening api=\([^ ]*\).*/\1/p' "$work/ing.out")
front_pids=()
for f in $(seq "$fronts"); do
  fleet_role "$build" "$work" "front$f" front "${common[@]}" --listen-device 127.0.0.1:0 --listen-mqtt "127.0.0.1:$mqtt_port" \
    --view-cache-mb 16
  front_pids+=("$(eval echo "\$front${f}_pid")")
done
per=$(( (n + fronts - 1) / fronts ))
prefixes=()
for f in $(seq "$fronts"); do prefixes+=("F$(printf %02d "$f")"); done
fleet_tenant "$build" "$work" "$api" "$per" "${prefixes[@]}"

echo "bootstrapping $((per * fronts)) devices through $fronts front ends"
t0=$(date +%s.%N)
bpids=()
for f in $(seq "$fronts"); do
  port=$(sed -n 's/^listening .* device=[^ ]*:\([0-9]*\).*/\1/p' "$work/front$f.out")
  fleet_bootstrap "$build" "$work" 127.0.0.1 "$port" "${prefixes[$((f - 1))]}" "$per" "$work/dev$f" \
    >"$work/boot$f.txt" 2>&1 &
  bpids+=($!)
done
for p in "${bpids[@]}"; do wait "$p"; done
cat "$work"/boot*.txt | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^errors=/) { split($i, a, "="); e += a[2] }} END {print "bootstrap errors=" e+0}'
echo "bootstrap seconds=$(python3 -c "import time; print(round(time.time() - $t0, 1))")"
cat "$work"/dev*/devices.txt > "$work/devices.txt"

# Resident memory of processes in KiB: RSS counts the shared libraries' pages in every process,
# PSS shares them out (what the front ends really take together).
rss_sum() { local p s=0; for p in "$@"; do s=$((s + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done; echo "$s"; }
pss_sum() { local p s=0; for p in "$@"; do s=$((s + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup"))); done; echo "$s"; }
cpu_sum() { python3 - "$@" <<'PY'
import os, sys
tck = os.sysconf("SC_CLK_TCK")
print(round(sum(sum(int(x) for x in open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[11:13]) for p in sys.argv[1:]) / tck, 1))
PY
}
rss0=$(rss_sum "${front_pids[@]}")
pss0=$(pss_sum "${front_pids[@]}")
cpu0=$(cpu_sum "${front_pids[@]}")
echo "front ends before connecting: rss_mib=$((rss0 / 1024)) pss_mib=$((pss0 / 1024)) (sums over $fronts)"

echo "registry: $((per * fronts)) connections from $fronts load generators, $fronts front ends, $(nproc) cores"
lpids=()
t0=$(date +%s.%N)
for f in $(seq "$fronts"); do
  "$build/tests/bench_mqtt" -c 16 -C 64 -T 1800 -f $(( (f - 1) * per )) -s "$f" -r -w 127.0.0.1 "$mqtt_port" \
    "$work/data/server-ca.pem" "$work/devices.txt" "$per" "$hold" >"$work/lg$f.txt" 2>&1 &
  lpids+=($!)
done
for i in $(seq 3600); do
  [ "$(cat "$work"/lg*.txt | grep -c '^connected=')" -eq "$fronts" ] && break
  sleep 0.5
done
connect_s=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
# sum LINE KEY: KEY=value summed over the load generators' lines that start with LINE.
sum() {
  cat "$work"/lg*.txt | awk -v p="$1" -v k="$2" 'index($0, p) == 1 {
    for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == k) s += a[2] } } END { print s + 0 }'
}
up=$(sum connected connected)
echo "connected=$up failed=$(sum connected failed) unopened=$(sum connected unopened) seconds=$connect_s per_sec=$(python3 -c "print(round($up / $connect_s))")"
echo "holding ${hold}s"
sleep "$hold"
rss2=$(rss_sum "${front_pids[@]}")
pss2=$(pss_sum "${front_pids[@]}")
cpu2=$(cpu_sum "${front_pids[@]}")
proj_rss=$(rss_sum "$proj_pid" "$ing_pid")
per_front=$(for f in $(seq "$fronts"); do curl -sf "http://$(sed -n 's/^listening api=\([^ ]*\).*/\1/p' "$work/front$f.out")/metrics" |
  sed -n 's/^registry_mqtt_connections{state="connected"} \([0-9]*\).*/\1/p'; done | paste -sd' ')
for p in "${lpids[@]}"; do kill -USR1 "$p"; done
rc=0
for p in "${lpids[@]}"; do wait "$p" || rc=1; done
held=$(sum held held)
python3 - "$held" "$(sum held failed)" "$hold" "$rss0" "$rss2" "$pss2" "$cpu0" "$cpu2" "$proj_rss" <<'PY'
import sys
held, failed, hold, rss0, rss2, pss2, cpu0, cpu2, proj = sys.argv[1:]
held, rss0, rss2, pss2, proj = int(held), int(rss0), int(rss2), int(pss2), int(proj)
print(f"held={held} failed={failed} hold_seconds={hold} fronts_rss_mib={rss2/1024:.0f} fronts_pss_mib={pss2/1024:.0f} "
      f"fronts_rss_delta_kib_per_conn={(rss2-rss0)/max(held,1):.1f} fronts_pss_kib_per_conn={pss2/max(held,1):.1f} "
      f"fronts_cpu_s={float(cpu2)-float(cpu0):.1f} projector_and_ingest_rss_mib={proj/1024:.0f}")
PY
echo "connections per front end: $per_front"
storm_s=$(cat "$work"/lg*.txt | sed -n 's/^storm .* seconds=\([0-9.]*\).*/\1/p' | sort -n | tail -1)
echo "storm reconnected=$(sum storm reconnected) failed_attempts=$(sum storm failed_attempts) resumed=$(sum storm resumed) seconds=$storm_s (the slowest load generator)"
[ "$(sum connected failed)" = 0 ] && [ "$(sum held failed)" = 0 ] || rc=1

# Mosquitto: one process, so at most what one process's descriptors allow.
for p in "${front_pids[@]}" "$proj_pid" "$ing_pid"; do kill "$p" 2>/dev/null || true; done
mn=$(( $(ulimit -Hn) - 200 ))
[ "$mn" -gt "$n" ] && mn=$n
if command -v mosquitto >/dev/null; then
  ulimit -n "$(ulimit -Hn)"
  mosquitto_start "$work"
  echo "mosquitto $mversion: $mn connections (one process; its descriptor limit is $(ulimit -Hn))"
  "$build/tests/bench_mqtt" -r -c 200 -p "$mpid" 127.0.0.1 "$mport" "$work/mserver.pem" "$work/devices.txt" \
    "$mn" "$hold" || true
fi
exit "$rc"
