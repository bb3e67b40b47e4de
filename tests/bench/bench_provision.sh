#!/usr/bin/env bash
# bench_provision.sh - zero-touch bootstraps per second end to end (mutual-TLS handshake with a
# factory certificate, CSR check, signing, the command decided and its events committed), beside
# `openssl speed ecdsap256` sign and verify rates on the same machine as the ceiling. Run on
# demand, not by CTest:
#
#   tests/bench/bench_provision.sh BUILD_DIR [DEVICES [THREADS]]     (2000 devices, 2 threads)
#
# Starts `registry serve` (embedded default, fsync on) in a temporary directory, creates a tenant,
# registers a factory CA made with the openssl CLI and a manifest of the serials, then runs
# bench_provision. Build BUILD_DIR as Release for figures worth quoting; the load generator
# shares the machine with the registry.
set -euo pipefail
build=$(cd "${1:?usage: bench_provision.sh BUILD_DIR [DEVICES [THREADS]]}" && pwd)
devices=${2:-2000}
threads=${3:-2}
work=$(mktemp -d /tmp/bench-provision.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

REGISTRY_ADMIN_TOKEN=bench-admin "$build/registry" serve --data "$work/data" \
  --listen-api 127.0.0.1:0 --listen-device 127.0.0.1:0 >"$work/out" 2>"$work/err" &
pid=$!
for i in $(seq 300); do grep -q '^listening' "$work/out" 2>/dev/null && break; sleep 0.1; done
api=$(sed -n 's/^listening api=\([^ ]*\).*/\1/p' "$work/out")
dev_port=$(sed -n 's/^listening .* device=[^ ]*:\([0-9]*\).*/\1/p' "$work/out")

openssl ecparam -name prime256v1 -genkey -noout -out "$work/factory.key"
openssl req -x509 -new -key "$work/factory.key" -subj "/CN=bench factory CA" -days 2 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
  -out "$work/factory.pem"
token=$(curl -sf -X POST -H 'Authorization: Bearer bench-admin' -H 'Content-Type: application/json' \
  -d '{"name":"bench"}' "http://$api/tenants" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
python3 -c 'import json,sys; print(json.dumps({"pem": open(sys.argv[1]).read()}))' "$work/factory.pem" |
  curl -sf -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    --data-binary @- "http://$api/factory-cas"
python3 -c 'import json,sys; print(json.dumps({"device_type":"bench","serials":["BP%06d" % i for i in range(int(sys.argv[1]))]}))' "$devices" |
  curl -sf -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    --data-binary @- "http://$api/manifests"

echo "registry: $devices devices, $threads client threads, $(nproc) cores, $(openssl version)"
result=$("$build/tests/bench_provision" 127.0.0.1 "$dev_port" "$work/data/server-ca.pem" \
  "$work/factory.pem" "$work/factory.key" BP "$devices" "$threads")
echo "registry bootstrap: $result"
speed=$(openssl speed -seconds 3 ecdsap256 2>/dev/null | awk '/256 bits ecdsa \(nistp256\)/ {print $(NF-1), $NF}')
sign=${speed% *}
verify=${speed#* }
echo "openssl speed ecdsap256 (one core): sign/s=$sign verify/s=$verify"
per_sec=$(sed -n 's/.*per_sec=\([0-9.]*\).*/\1/p' <<<"$result")
python3 -c "import sys; p,s,v=map(float,sys.argv[1:]); print(f'bootstraps/s over ECDSA signs/s: {p/s:.3f}; over verifies/s: {p/v:.3f}')" "$per_sec" "$sign" "$verify"
