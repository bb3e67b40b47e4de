# fleet.sh - what the MQTT benchmarks share, sourced by bench_mqtt.sh, bench_shadow.sh and
# bench_mqtt_fleet.sh: a registry with a tenant, a factory CA, a manifest and N devices
# bootstrapped through a device port (tests/bench/bench_provision keeps each device's certificate
# and key for the load generators).
#
#   fleet_workdir NAME N
#
# Makes the benchmark's temporary folder (WORK, /tmp/NAME.XXXXXX) and the arrays `pids` (processes
# to stop at exit) and `started` (ops/ services to stop at exit: redis, kafka); at exit they are
# stopped and WORK removed. Raises the soft descriptor limit towards N + 4096 (never lowers it;
# the hard limit bounds it).
#
#   fleet_role BUILD WORK NAME ROLE [ARGS...]
#
# Starts `registry ROLE --listen-api 127.0.0.1:0 ARGS` (admin token bench-admin), its output in
# WORK/NAME.out and WORK/NAME.err, its pid in NAME_pid and in `pids`, and waits for its
# "listening" line.
#
#   fleet_start BUILD WORK N PREFIX [SERVE_ARGS...]
#
# Starts `registry serve` (fleet_role reg: WORK/reg.out, WORK/reg.err) and sets reg_pid, api
# (host:port), api_port, dev_port, mqtt_port, then runs fleet_tenant and fleet_bootstrap.
#
#   fleet_tenant BUILD WORK API N PREFIX...
#
# Makes the tenant (its operator token in `token`), registers WORK/factory.{pem,key} as its
# factory CA, posts a manifest of N serials PREFIX000000... for each prefix and writes
# WORK/issuing.pem; the
# registry at API must take admin token bench-admin. fleet_bootstrap then provisions them.
#
#   fleet_bootstrap BUILD WORK HOST DEV_PORT PREFIX N OUT_DIR
#
# Bootstraps N devices through that device port, 8 at a time, writing OUT_DIR/devices.txt (one
# "client_id cert.pem key.pem" a line), and prints the rate.
fleet_workdir() {
  work=$(mktemp -d "/tmp/$1.XXXXXX")
  pids=()
  started=()
  trap fleet_cleanup EXIT
  local want=$(($2 + 4096)) hard
  hard=$(ulimit -Hn)
  if [ "$hard" != unlimited ] && [ "$want" -gt "$hard" ]; then want=$hard; fi
  if [ "$want" -gt "$(ulimit -Sn)" ]; then ulimit -Sn "$want"; fi
}

fleet_cleanup() {
  local p ops
  ops=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../ops" && pwd)
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for p in "${started[@]}"; do "$ops/$p.sh" stop >/dev/null 2>&1 || true; done
  rm -rf "$work"
}

fleet_role() {
  local build=$1 work=$2 name=$3 role=$4 i
  shift 4
  REGISTRY_ADMIN_TOKEN=bench-admin "$build/registry" "$role" --listen-api 127.0.0.1:0 "$@" \
    >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  eval "${name}_pid=$!"
  for i in $(seq 1200); do grep -q '^listening' "$work/$name.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "fleet.sh: registry $role did not start:" >&2; tail -n 20 "$work/$name.err" >&2; return 1
}

# fleet_free_port: a loopback port free now.
fleet_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

fleet_start() {
  local build=$1 work=$2 n=$3 prefix=$4
  shift 4
  fleet_role "$build" "$work" reg serve --data "$work/data" --listen-device 127.0.0.1:0 \
    --listen-mqtt 127.0.0.1:0 "$@"
  api=$(sed -n 's/^listening api=\([^ ]*\).*/\1/p' "$work/reg.out")
  api_port=${api##*:}
  dev_port=$(sed -n 's/^listening .* device=[^ ]*:\([0-9]*\).*/\1/p' "$work/reg.out")
  mqtt_port=$(sed -n 's/^listening .* mqtt=[^ ]*:\([0-9]*\).*/\1/p' "$work/reg.out")

  fleet_tenant "$build" "$work" "$api" "$n" "$prefix"
  fleet_bootstrap "$build" "$work" 127.0.0.1 "$dev_port" "$prefix" "$n" "$work/devices"
}

fleet_tenant() {
  local build=$1 work=$2 api=$3 n=$4 prefix
  shift 4
  openssl ecparam -name prime256v1 -genkey -noout -out "$work/factory.key"
  openssl req -x509 -new -key "$work/factory.key" -subj "/CN=bench factory CA" -days 2 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" -out "$work/factory.pem"
  token=$(curl -sf -X POST -H 'Authorization: Bearer bench-admin' -H 'Content-Type: application/json' \
    -d '{"name":"bench"}' "http://$api/tenants" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  python3 -c 'import json,sys; print(json.dumps({"pem": open(sys.argv[1]).read()}))' "$work/factory.pem" |
    curl -sf -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
      --data-binary @- "http://$api/factory-cas"
  for prefix in "$@"; do
    python3 -c 'import json,sys; print(json.dumps({"device_type":"bench","serials":["%s%06d" % (sys.argv[2], i) for i in range(int(sys.argv[1]))]}))' "$n" "$prefix" |
      curl -sf -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        --data-binary @- "http://$api/manifests"
  done
  curl -sf -H "Authorization: Bearer $token" "http://$api/issuing-ca" > "$work/issuing.pem"
}

fleet_bootstrap() {
  local build=$1 work=$2 host=$3 port=$4 prefix=$5 n=$6 out=$7
  mkdir -p "$out"
  echo "bootstrapping $n devices: $("$build/tests/bench_provision" "$host" "$port" "$work/data/server-ca.pem" \
    "$work/factory.pem" "$work/factory.key" "$prefix" "$n" 8 "$out")"
}

# mosquitto_start WORK: Mosquitto 2.0 (Debian) as the peer, on the fleet's client certificates
# (WORK/issuing.pem, the tenant's issuing CA, verifies them: require_certificate true) with a
# throwaway server certificate of the same kind (WORK/mserver.pem; the registry's key stays in its
# keystore). Appends its pid to `pids`; sets mpid, mport and mversion once it accepts connections.
mosquitto_start() {
  local work=$1 i
  mport=$(fleet_free_port)
  cat > "$work/mosquitto.conf" <<CONF
per_listener_settings true
user root
listener $mport 127.0.0.1
cafile $work/issuing.pem
certfile $work/mserver.pem
keyfile $work/server.key
require_certificate true
use_identity_as_username true
allow_anonymous true
max_keepalive 65535
CONF
  openssl ecparam -name prime256v1 -genkey -noout -out "$work/server.key"
  openssl req -x509 -new -key "$work/server.key" -subj "/CN=127.0.0.1" -days 2 \
    -addext "subjectAltName=IP:127.0.0.1" -out "$work/mserver.pem" 2>/dev/null
  mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  pids+=($!)
  mpid=$!
  for i in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null && break; sleep 0.1; done
  mversion=$( (mosquitto -h 2>/dev/null || true) | sed -n 's/.*version \([0-9.]*\).*/\1/p' | head -1)
}
