#!/usr/bin/env bash
# bench_tls_nginx.sh - mutual-TLS connections per second (connect, handshake with a client
# certificate, one GET /healthz, close), full and resumed handshakes, with bench_handshake against
# Debian's nginx as the reference. Run on demand, not by CTest:
#
#   tests/bench/bench_tls_nginx.sh BUILD_DIR [SECONDS [THREADS]]    (10 s, 2 client threads)
#   NGINX_WORKERS=2 tests/bench/bench_tls_nginx.sh build-rel        (default 1 worker process)
#
# A throwaway PKI (ECDSA P-256: a CA, a server certificate for 127.0.0.1, a client certificate)
# is made with the openssl CLI in a temporary directory. nginx runs in the foreground with a
# temporary config: ssl_verify_client on against the CA, a shared session cache, session tickets
# on, `location = /healthz` answering 200. Build BUILD_DIR as Release for figures worth quoting.
# The load generator shares the machine with the server: on a small machine the figures are of
# the pair, so compare targets with the same THREADS.
#
# Another target is one more call to bench_target (see the end): it takes a name, a host, a port
# and the CA that verifies that server, and uses the client certificate made here (the target must
# trust $work/ca.pem for client certificates).
set -euo pipefail
build=$(cd "${1:?usage: bench_tls_nginx.sh BUILD_DIR [SECONDS [THREADS]]}" && pwd)
seconds=${2:-10}
threads=${3:-2}
workers=${NGINX_WORKERS:-1}
bench=$build/tests/bench_handshake
[ -x "$bench" ] || { echo "no $bench: build the tree first" >&2; exit 1; }
work=$(mktemp -d /tmp/bench-tls.XXXXXX)
nginx_pid=
cleanup() {
  if [ -n "$nginx_pid" ]; then kill "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- PKI ------------------------------------------------------------------------------------
make_pki() {
  local d=$1
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/ca.key"
  openssl req -x509 -new -key "$d/ca.key" -subj "/CN=bench CA" -days 2 -out "$d/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  local name eku san
  for name in server client; do
    openssl ecparam -name prime256v1 -genkey -noout -out "$d/$name.key"
    openssl req -new -key "$d/$name.key" -subj "/CN=bench-$name" -out "$d/$name.csr"
    if [ "$name" = server ]; then eku=serverAuth san="subjectAltName=IP:127.0.0.1"; else eku=clientAuth san=""; fi
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s\n' \
      "$eku" "$san" > "$d/$name.ext"
    openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -days 2 -extfile "$d/$name.ext" -out "$d/$name.pem" 2>/dev/null
  done
}

# --- nginx ----------------------------------------------------------------------------------
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
  local port=$1 i
  for i in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $port" >&2
  return 1
}

start_nginx() {
  local port=$1
  if [ ! -x /usr/sbin/nginx ]; then
    apt-get install -y nginx-light >/dev/null 2>&1 || apt-get install -y nginx >/dev/null
  fi
  mkdir -p "$work/nginx"
  cat > "$work/nginx/nginx.conf" <<EOF
worker_processes $workers;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $work/server.pem;
    ssl_certificate_key $work/server.key;
    ssl_client_certificate $work/ca.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    location = /healthz { return 200 "ok\n"; }
  }
}
EOF
  /usr/sbin/nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' \
    2>>"$work/nginx/error.log" &
  nginx_pid=$!
  wait_port "$port"
}

# --- one target -----------------------------------------------------------------------------
# bench_target NAME HOST PORT CAFILE: full, then resumed handshakes, with the client certificate
# made here; prints bench_handshake's lines prefixed with NAME.
bench_target() {
  local name=$1 host=$2 port=$3 ca=$4 mode
  for mode in full resumed; do
    printf '%-8s %s\n' "$name" \
      "$("$bench" "$host" "$port" "$ca" "$work/client.pem" "$work/client.key" "$seconds" "$threads" "$mode" /healthz)"
  done
}

make_pki "$work"
port=$(free_port)
start_nginx "$port"
echo "nginx $(/usr/sbin/nginx -v 2>&1 | sed 's/.*nginx\///'), worker_processes $workers;" \
  "bench_handshake: $threads threads, ${seconds}s per mode; $(nproc) cores; $(openssl version)"
bench_target nginx 127.0.0.1 "$port" "$work/ca.pem" | tee "$work/nginx.out"

# --- the registry's device port ---------------------------------------------------------------
# The same client certificate: its CA is registered as a tenant's factory CA, so the registry's
# handshake verifies the chain against its trust store as nginx does.
start_registry() {
  REGISTRY_ADMIN_TOKEN=bench-admin "$build/registry" serve --data "$work/reg" \
    --listen-api 127.0.0.1:0 --listen-device 127.0.0.1:0 >"$work/reg.out" 2>"$work/reg.err" &
  registry_pid=$!
  local i
  for i in $(seq 300); do
    grep -q '^listening' "$work/reg.out" 2>/dev/null && break
    sleep 0.1
  done
  api=$(sed -n 's/^listening api=\([^ ]*\).*/\1/p' "$work/reg.out")
  dev_port=$(sed -n 's/^listening .* device=[^ ]*:\([0-9]*\).*/\1/p' "$work/reg.out")
  local token
  token=$(curl -sf -X POST -H 'Authorization: Bearer bench-admin' -H 'Content-Type: application/json' \
    -d '{"name":"bench"}' "http://$api/tenants" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  python3 -c 'import json,sys; print(json.dumps({"pem": open(sys.argv[1]).read()}))' "$work/ca.pem" |
    curl -sf -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
      --data-binary @- "http://$api/factory-cas"
}
registry_pid=
trap 'if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; fi; cleanup' EXIT
start_registry
bench_target registry 127.0.0.1 "$dev_port" "$work/reg/server-ca.pem" | tee "$work/registry.out"
python3 - "$work/nginx.out" "$work/registry.out" <<'PY'
import re, sys
def rates(f):
    return {l.split()[1].split("=")[1]: float(re.search(r"per_sec=([0-9.]+)", l).group(1)) for l in open(f)}
n, r = rates(sys.argv[1]), rates(sys.argv[2])
for mode in ("full", "resumed"):
    print(f"ratio registry/nginx {mode}: {r[mode] / n[mode]:.2f}")
PY
