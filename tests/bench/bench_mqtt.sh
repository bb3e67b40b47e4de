#!/usr/bin/env bash
# bench_mqtt.sh - concurrent mutual-TLS MQTT connections held by the registry, and by Mosquitto 2.0
# (Debian, require_certificate true) on the same device certificates, as the peer. Run on demand:
#
#   tests/bench/bench_mqtt.sh BUILD_DIR [N [HOLD_SECONDS]]        (2000 devices, 10 s)
#
# Starts `registry serve` (embedded default) in a temporary directory, bootstraps N devices
# through the device port (tests/bench/bench_provision, which keeps each device's certificate and
# key), then runs bench_mqtt against the registry's MQTT port and against mosquitto configured
# with the tenant's issuing CA as its client CA; after the hold, each gets a reconnect storm (all
# connections dropped at once and reopened, resuming their TLS sessions). Prints both and the
# ratios. For N beyond ~28,000
# the load generator spreads over source addresses 127.0.0.2...; every connection is a descriptor
# in both processes, so N stays below the hard file-descriptor limit (raising it needs
# CAP_SYS_RESOURCE). Exits non-zero when the registry failed any connection.
set -euo pipefail
build=$(cd "${1:?usage: bench_mqtt.sh BUILD_DIR [N [HOLD_SECONDS]]}" && pwd)
n=${2:-2000}
hold=${3:-10}
source "$(dirname "$0")/fleet.sh"
fleet_workdir bench-mqtt "$n"
fleet_start "$build" "$work" "$n" MQ

echo "registry: $n connections, hold ${hold}s, $(nproc) cores"
reg_rc=0
"$build/tests/bench_mqtt" -r -p "$reg_pid" 127.0.0.1 "$mqtt_port" "$work/data/server-ca.pem" \
  "$work/devices/devices.txt" "$n" "$hold" | tee "$work/registry.txt" || reg_rc=$?
kill "$reg_pid"; wait "$reg_pid" 2>/dev/null || true

# Mosquitto on the same client certificates.
if command -v mosquitto >/dev/null; then
  mosquitto_start "$work"
  echo "mosquitto $mversion: $n connections"
  "$build/tests/bench_mqtt" -r -p "$mpid" 127.0.0.1 "$mport" "$work/mserver.pem" \
    "$work/devices/devices.txt" "$n" "$hold" | tee "$work/mosquitto.txt" || tail -n 5 "$work/mosquitto.log"
  python3 - "$work/registry.txt" "$work/mosquitto.txt" <<'PY'
import re, sys
def kv(f):
    d = {}
    for line in open(f):
        part = line.split()[0].split("=")[0]  # connected, held or storm
        for k, v in re.findall(r"(\w+)=([0-9.]+)", line): d[part + "." + k] = float(v)
    return d
r, m = kv(sys.argv[1]), kv(sys.argv[2])
def ratio(k):
    return r.get(k, 0) / m[k] if m.get(k) else float("nan")
if m.get("connected.per_sec"):
    print(f"ratio registry/mosquitto: connections/s {ratio('connected.per_sec'):.2f}, "
          f"held {ratio('held.held'):.2f}, "
          f"memory per connection {ratio('held.server_rss_delta_kib_per_conn'):.2f}, "
          f"reconnect storm time {ratio('storm.seconds'):.2f}")
PY
fi
exit "$reg_rc"
