#!/usr/bin/env bash
# bench_lookup.sh - GET /devices/{id} (device + metadata) with N devices in the view, against the
# same lookup in PostgreSQL 15 holding the same fleet in the classic relational design, in the same
# run on the same machine. Run on demand, not by CTest:
#
#   tests/bench/bench_lookup.sh BUILD_DIR [N [CONNECTIONS]]   (N = 1000000, CONNECTIONS = 8;
#                                                             needs root for postgres)
#   BENCH_DATA=DIR tests/bench/bench_lookup.sh BUILD_DIR   (reuse a view bench_projector filled)
#
# 1. bench_projector fills a fresh data directory with N devices (3 metadata keys each, half of
#    them patched once) through the projector, and reports the projector's rate.
# 2. `registry serve` opens it and is left to finish its background compactions (a settled
#    store, as a running registry is); wrk (1 thread, CONNECTIONS connections, 20 s) asks for
#    random devices, then again with 2 and with 4 connections (the target's rate, with little
#    queueing);
#    the server's resident memory is read from /proc. With 2 cores shared by the
#    load generator and the server, few connections keep the queueing out of the latency: by
#    Little's law 32 connections at 20k requests/s already mean 1.6 ms on average.
# 3. PostgreSQL 15: devices(device_id uuid primary key, ...) and device_metadata(device_id, key,
#    value) with a btree on key and a GIN (pg_trgm) index on value, the same N devices and
#    metadata; pgbench (CONNECTIONS connections, 1 thread, 20 s, prepared) runs the equivalent
#    query: the device row by id with its metadata aggregated as JSON.
set -euo pipefail
build=$(cd "${1:?usage: bench_lookup.sh BUILD_DIR [N]}" && pwd)
n=${2:-1000000}
conns=${3:-8}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/bench-lookup.XXXXXX)
pgbin=/usr/lib/postgresql/15/bin
port=18181 pgport=55432
cleanup() {
  [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null; wait 2>/dev/null || true
  [ -d "$work/pg" ] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${BENCH_DATA:-}" ]; then
  echo "== using the view already filled in $BENCH_DATA"
  cp -a "$BENCH_DATA" "$work/data"
  n=$(wc -l < "$work/data/bench-ids.txt")
else
  echo "== projector: filling the view with $n devices"
  "$build/tests/bench_projector" "$work/data" "$n"
fi

echo "== registry: GET /devices/{id}, $n devices"
REGISTRY_ADMIN_TOKEN=bench-admin "$build/registry" serve --data "$work/data" \
  --listen-api "127.0.0.1:$port" > "$work/serve.out" 2>&1 &
srv=$!
for _ in $(seq 1 3000); do grep -q listening "$work/serve.out" && break; sleep 0.1; done
curl -sf -H "Authorization: Bearer bench-token" "http://127.0.0.1:$port/devices/$(head -n1 "$work/data/bench-ids.txt")" > /dev/null
# Settled: wait until the server has used under 5% of a core for two seconds.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$srv/stat"; }
for _ in $(seq 1 150); do
  a=$(cpu_ticks); sleep 2; b=$(cpu_ticks)
  [ $((b - a)) -le 10 ] && break
done
BENCH_IDS="$work/data/bench-ids.txt" BENCH_TOKEN=bench-token \
  wrk -t1 -c"$conns" -d20s --latency -s "$here/lookup.lua" "http://127.0.0.1:$port" | tee "$work/wrk.out"
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$srv/status")
reg_rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
reg_p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.out")
reg_p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.out")
# The target is a latency at a rate (P99 <= 1 ms at >= 20,000/s), not at saturation: 2 or 4
# connections keep the rate about 20,000/s with little queueing in front of the server (which
# of the two holds it depends on the machine's phase).
low=()
for c in 2 4; do
  echo "== registry: the same with $c connections"
  BENCH_IDS="$work/data/bench-ids.txt" BENCH_TOKEN=bench-token \
    wrk -t1 -c$c -d20s --latency -s "$here/lookup.lua" "http://127.0.0.1:$port" | tee "$work/wrk$c.out"
  low+=("$(printf '%-12s %12s %10s %10s   (%d connections)' registry \
    "$(awk '/Requests\/sec/ {print $2}' "$work/wrk$c.out")" "$(awk '$1 == "50%" {print $2}' "$work/wrk$c.out")" \
    "$(awk '$1 == "99%" {print $2}' "$work/wrk$c.out")" "$c")")
done
kill "$srv"; wait "$srv" 2>/dev/null || true; srv=

echo "== postgresql 15: the same fleet, the same lookup"
mkdir -p "$work/pg" && chown postgres "$work" "$work/pg"
runuser -u postgres -- "$pgbin/initdb" -D "$work/pg" -A trust >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -o "-p $pgport -k /tmp -c shared_buffers=512MB -c fsync=off" -l "$work/pg/log" -w start >/dev/null
psql=(runuser -u postgres -- psql -q -h /tmp -p "$pgport" -d postgres -v ON_ERROR_STOP=1)
"${psql[@]}" <<SQL
CREATE EXTENSION pg_trgm;
CREATE TABLE devices (device_id uuid PRIMARY KEY, tenant_id uuid NOT NULL, serial_number text NOT NULL,
  device_type text NOT NULL, status text NOT NULL, registered_at timestamptz NOT NULL,
  last_seen_at timestamptz, firmware_version text, hardware_revision text, version bigint NOT NULL,
  UNIQUE (tenant_id, serial_number));
CREATE TABLE device_metadata (device_id uuid NOT NULL REFERENCES devices, key text NOT NULL,
  value text NOT NULL, PRIMARY KEY (device_id, key));
INSERT INTO devices SELECT md5(i::text)::uuid, '0b5e1c52-7d0e-4c39-9a57-3f2d8e6a4b10',
  'SN-' || lpad(i::text, 9, '0'), (ARRAY['thermostat','meter','camera','gateway'])[i % 4 + 1],
  'provisioning', now(), NULL, '2.' || (i % 12) || '.0', 'rev-b', 1 FROM generate_series(1, $n) i;
INSERT INTO device_metadata SELECT md5(i::text)::uuid, 'region',
  (ARRAY['eu-west','eu-north','us-east','ap-south'])[i % 4 + 1] FROM generate_series(1, $n) i;
INSERT INTO device_metadata SELECT md5(i::text)::uuid, 'floor', CASE WHEN i % 2 = 1 THEN '7' ELSE (i % 40)::text END
  FROM generate_series(1, $n) i;
INSERT INTO device_metadata SELECT md5(i::text)::uuid, 'owner', 'facilities' FROM generate_series(1, $n) i;
INSERT INTO device_metadata SELECT md5(i::text)::uuid, 'room', 'r' || (i % 500) FROM generate_series(1, $n, 2) i;
CREATE INDEX device_metadata_key ON device_metadata (key);
CREATE INDEX device_metadata_value ON device_metadata USING gin (value gin_trgm_ops);
VACUUM ANALYZE;
SQL
cat > "$work/lookup.sql" <<SQL
\set i random(1, $n)
SELECT d.*, (SELECT json_object_agg(m.key, m.value) FROM device_metadata m WHERE m.device_id = d.device_id) AS metadata
  FROM devices d WHERE d.device_id = md5(:i::text)::uuid;
SQL
chmod 644 "$work/lookup.sql"
(cd "$work" && runuser -u postgres -- "$pgbin/pgbench" -n -h /tmp -p "$pgport" -c "$conns" -j 1 -T 20 -M prepared \
  -f "$work/lookup.sql" --log --log-prefix="$work/pgb" postgres | tee "$work/pgbench.out")
pg_tps=$(awk '/^tps/ {print $3; exit}' "$work/pgbench.out")
cat "$work"/pgb.* | awk '{print $3}' | sort -n > "$work/lat"
cnt=$(wc -l < "$work/lat")
pg_p50=$(awk -v c="$cnt" 'NR == int(c * 0.50) {printf "%.2fms", $1 / 1000}' "$work/lat")
pg_p99=$(awk -v c="$cnt" 'NR == int(c * 0.99) {printf "%.2fms", $1 / 1000}' "$work/lat")

echo
echo "== GET /devices/{id} with $n devices (wrk -t1 -c$conns -d20s; pgbench -c$conns -j1 -T20 -M prepared)"
printf '%-12s %12s %10s %10s\n' "" "requests/s" "P50" "P99"
printf '%-12s %12s %10s %10s\n' registry "$reg_rps" "$reg_p50" "$reg_p99"
printf '%-12s %12s %10s %10s\n' postgresql "$pg_tps" "$pg_p50" "$pg_p99"
printf '%s\n' "${low[@]}"
awk -v a="$reg_rps" -v b="$pg_tps" 'BEGIN {printf "throughput ratio registry/postgresql: %.2f\n", a / b}'
echo "registry resident memory with $n devices: $((rss_kib / 1024)) MiB"
