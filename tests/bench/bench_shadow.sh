#!/usr/bin/env bash
# bench_shadow.sh - device shadows under load: operator PUT desired -> delta on a connected MQTT
# device (P50/P99 at a steady rate), reported-state updates accepted per second from a connected
# fleet, and Mosquitto 2.0 (Debian, mutual TLS) relaying a retained message at the same rate as
# the floor. Run on demand, never by CTest:
#
#   tests/bench/bench_shadow.sh BUILD_DIR [DEVICES [SECONDS [RATE]]] [--kafka HOST:PORT --redis HOST:PORT]
#                                       (10000 devices, 20 s a phase, 1000 PUTs/s)
#
# Starts `registry serve` (the embedded default, fsync on; with --kafka and --redis all roles in
# one process on the distributed engines, under a region of its own, bench-PID, so that its topics
# are new) in a temporary directory, bootstraps DEVICES devices through the device port
# (tests/bench/bench_provision keeps each one's certificate and key), then runs
# `bench_shadow registry`: every device connected with its own certificate and subscribed to its
# update/delta, RATE PUTs/s for SECONDS from HTTP_CONNS (16) keep-alive connections, then every
# device reporting for SECONDS with at most WINDOW (8) updates waiting, at QoS QOS (1). Then
# mosquitto with the tenant's issuing CA as its client CA (require_certificate,
# use_identity_as_username) and `bench_shadow relay` at RATE. Prints the figures of each and a
# table; keeps the registry's /metrics after the run in $BENCH_OUT (default: the temporary
# directory, removed at exit) when set. Bootstrapping runs at ~250 devices/s: 10,000 take ~40 s.
# The load generator shares the machine's cores with the registry; both CPU figures are printed.
# Build BUILD_DIR as Release for figures worth quoting. With --kafka/--redis (e.g. the broker of
# `ops/kafka.sh start`, 127.0.0.1:19092, and `ops/redis.sh start`, 127.0.0.1:16379) each run leaves
# its two topics, registry.bench-PID.{commands,events}, on the broker, and its notifications go
# over that Redis's shared channels: run it when no test uses them.
set -euo pipefail
usage="usage: bench_shadow.sh BUILD_DIR [DEVICES [SECONDS [RATE]]] [--kafka HOST:PORT --redis HOST:PORT]"
args=() kafka= redis=
while [ $# -gt 0 ]; do
  case "$1" in
    --kafka) kafka=${2:?$usage}; shift 2 ;;
    --redis) redis=${2:?$usage}; shift 2 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
if { [ -n "$kafka" ] && [ -z "$redis" ]; } || { [ -z "$kafka" ] && [ -n "$redis" ]; }; then
  echo "bench_shadow.sh: --kafka and --redis go together" >&2; exit 2
fi
build=$(cd "${args[0]:?$usage}" && pwd)
n=${args[1]:-10000}
secs=${args[2]:-20}
rate=${args[3]:-1000}
http_conns=${HTTP_CONNS:-16}
window=${WINDOW:-8}
qos=${QOS:-1}
source "$(dirname "$0")/fleet.sh"
fleet_workdir bench-shadow "$n"

engine=()
deployment="embedded default"
if [ -n "$kafka" ]; then
  engine=(--kafka "$kafka" --redis "$redis" --region "bench-$$")
  deployment="distributed (Kafka $kafka, Redis $redis, one process)"
fi
fleet_start "$build" "$work" "$n" SH "${engine[@]}"

echo "registry ($deployment): $n devices, ${secs}s a phase, $rate PUTs/s, $(nproc) cores"
"$build/tests/bench_shadow" registry 127.0.0.1 "$mqtt_port" "$work/data/server-ca.pem" \
  "$work/devices/devices.txt" "$n" "$api_port" "$token" "$secs" "$rate" "$reg_pid" \
  "$http_conns" "$window" "$qos" | tee "$work/registry.txt"
curl -sf "http://$api/metrics" > "$work/metrics.txt" || true
if [ -n "${BENCH_OUT:-}" ]; then mkdir -p "$BENCH_OUT" && cp "$work/metrics.txt" "$work/registry.txt" "$BENCH_OUT/"; fi
grep -E '^registry_(projector|ingest|mqtt_shadow|mqtt_messages|log_append)|^registry_bus' "$work/metrics.txt" || true
kill "$reg_pid"; wait "$reg_pid" 2>/dev/null || true
grep -i -E 'drop|error|fail' "$work/reg.err" | tail -n 5 || true

# Mosquitto on two of the same device certificates.
mosquitto_start "$work"
echo "mosquitto $mversion: retained relay, $rate messages/s for ${secs}s"
"$build/tests/bench_shadow" relay 127.0.0.1 "$mport" "$work/mserver.pem" "$work/devices/devices.txt" \
  "$secs" "$rate" "$mpid" | tee "$work/mosquitto.txt" || tail -n 5 "$work/mosquitto.log"

python3 - "$work/registry.txt" "$work/mosquitto.txt" "$n" "$secs" "$rate" "$(nproc)" "$mversion" "$deployment" <<'PY'
import re, sys
def kv(f, prefix):
    for line in open(f):
        if line.startswith(prefix + " "):
            return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line)}
    return {}
reg, mos = sys.argv[1], sys.argv[2]
n, secs, rate, cores, mversion, deployment = sys.argv[3:9]
c = {}
for line in open(reg):
    if line.startswith("connected="):
        c = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line)}
d, r, m = kv(reg, "delta"), kv(reg, "reported"), kv(mos, "relay")
def threads(prefix):
    for line in open(reg):
        if line.startswith(prefix + " "):
            t = re.search(r"server_threads=(\S+)", line)
            if t:
                return ", ".join(f"{k if k == 'main' else 'thread ' + k} {v}"
                                 for k, v in (x.split(":") for x in t.group(1).split(",")))
    return "n/a"
print(f"== shadow benchmark ({deployment}): {int(c.get('connected', 0))} devices connected, {cores} cores")
if d:
    print(f"delta latency (PUT desired -> delta on the device), {d['put_per_sec']:.0f} PUTs/s for "
          f"{d['seconds']:.0f} s (asked {rate}/s): P50 {d['p50_ms']:.1f} ms, P99 {d['p99_ms']:.1f} ms, "
          f"max {d['max_ms']:.1f} ms, {int(d['received'])}/{int(d['ok'])} received "
          f"({int(d['missing'])} missing, {int(d['http_errors'])} PUTs failed); PUT answer P50 "
          f"{d['put_p50_ms']:.1f} ms, P99 {d['put_p99_ms']:.1f} ms; registry CPU "
          f"{d.get('server_cpu_cores', 0):.2f} cores (busiest threads: {threads('delta')}), load "
          f"generator {d['loadgen_cpu_cores']:.2f}")
if m and d:
    ratio = lambda a, b: f"{a / b:.1f}" if b else "n/a"
    print(f"mosquitto {mversion} retained relay, same rate: P50 {m['p50_ms']:.2f} ms, P99 "
          f"{m['p99_ms']:.2f} ms ({int(m['received'])}/{int(m['msgs'])} received); ratio "
          f"registry/mosquitto P50 {ratio(d['p50_ms'], m['p50_ms'])}, P99 {ratio(d['p99_ms'], m['p99_ms'])}")
if r:
    print(f"reported updates accepted: {r['per_sec']:.0f}/s from {int(r['subscribed'])} devices "
          f"(QoS {int(r['qos'])}, at most {int(r['window'])} waiting each; registry CPU "
          f"{r.get('server_cpu_cores', 0):.2f} cores, busiest threads: {threads('reported')}; load "
          f"generator {r['loadgen_cpu_cores']:.2f}); "
          f"rejected {int(r['rejected'])} (429: {int(r['rejected_429'])}, 503: {int(r['rejected_503'])}), "
          f"unanswered {int(r['unanswered'])}")
PY
