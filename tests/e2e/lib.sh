# lib.sh - helpers for the end-to-end tests: start the real `registry` binary on loopback, talk
# to it with curl, check answers. Sourced by tests/e2e/NN_*.sh; CTest passes REGISTRY_BIN.
set -euo pipefail

: "${REGISTRY_BIN:?REGISTRY_BIN must name the registry binary}"
export REGISTRY_ADMIN_TOKEN="${REGISTRY_ADMIN_TOKEN:-e2e-admin-token-$$}"
ADMIN="$REGISTRY_ADMIN_TOKEN"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/registry-e2e.XXXXXX")
PIDS=()
FAILS=0
CHECKS=0

cleanup_all() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$FAILS" -eq 0 ]; then rm -rf "$WORK"; else echo "kept $WORK for inspection"; fi
}
trap cleanup_all EXIT

fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
pass() { CHECKS=$((CHECKS + 1)); }

# start_role NAME ROLE ARGS...: starts `registry ROLE ARGS` in the background, waits for its
# "listening api=HOST:PORT" line and sets the variable NAME to http://HOST:PORT, and, for the
# roles with device ports (serve, front), NAME_DEV to https://HOST:PORT and NAME_MQTT to the MQTT
# port's number.
start_role() {
  local name=$1 role=$2; shift 2
  local out="$WORK/$name.out" dev=()
  case "$role" in serve | front) dev=(--listen-device 127.0.0.1:0 --listen-mqtt 127.0.0.1:0) ;; esac
  "$REGISTRY_BIN" "$role" --listen-api 127.0.0.1:0 "${dev[@]}" "$@" >"$out" 2>"$WORK/$name.err" &
  local pid=$!
  PIDS+=("$pid")
  eval "${name}_PID=$pid"
  local i
  for i in $(seq 1 600); do
    if grep -q '^listening api=' "$out" 2>/dev/null; then
      local addr
      addr=$(sed -n 's/^listening api=\([^ ]*\).*/\1/p' "$out" | head -n1)
      eval "$name=http://$addr"
      addr=$(sed -n 's/^listening .* device=\([^ ]*\).*/\1/p' "$out" | head -n1)
      [ -n "$addr" ] && eval "${name}_DEV=https://$addr"
      addr=$(sed -n 's/^listening .* mqtt=[^ ]*:\([0-9]*\).*/\1/p' "$out" | head -n1)
      [ -n "$addr" ] && eval "${name}_MQTT=$addr"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "registry $role exited early:" >&2; cat "$WORK/$name.err" >&2; return 1
    fi
    sleep 0.1
  done
  echo "registry $role did not start" >&2; cat "$WORK/$name.err" >&2; return 1
}

# req METHOD URL TOKEN [BODY [CONTENT-TYPE]]: sets STATUS and BODY.
req() {
  local method=$1 url=$2 token=$3 body=${4-} ctype=${5-application/json}
  local args=(-sS -o "$WORK/body" -w '%{http_code}' -X "$method" --max-time 60)
  [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
  if [ -n "$body" ]; then args+=(-H "Content-Type: $ctype" --data-binary "$body"); fi
  STATUS=$(curl "${args[@]}" "$url") || STATUS=000
  BODY=$(cat "$WORK/body" 2>/dev/null || true)
}

# expect STATUS [jq-like python expression over `b` that must be true]
expect() {
  local want=$1 cond=${2-}
  if [ "$STATUS" != "$want" ]; then
    fail "${CONTEXT:-} expected $want, got $STATUS: $BODY"; return 0
  fi
  if [ -n "$cond" ]; then
    if ! python3 -c "import json,sys; b=json.loads(sys.argv[1]); sys.exit(0 if ($cond) else 1)" "$BODY" 2>/dev/null; then
      fail "${CONTEXT:-} condition '$cond' false for: $BODY"; return 0
    fi
  fi
  pass
}

# field EXPR: prints a value from BODY (python expression over b).
field() { python3 -c "import json,sys; b=json.loads(sys.argv[1]); print($1)" "$BODY"; }

finish() {
  echo "$CHECKS passed, $FAILS failed"
  [ "$FAILS" -eq 0 ]
}

# stop_role NAME: SIGTERM, then the exit status must be 0 (under the sanitizers that also means
# no leak and no undefined behaviour on the way out).
stop_role() {
  local pid_var="${1}_PID" rc=0
  local pid=${!pid_var}
  kill -TERM "$pid"
  wait "$pid" || rc=$?
  if [ "$rc" -eq 0 ]; then pass; else fail "$1 exited with $rc: $(tail -n 30 "$WORK/$1.err")"; fi
}

# start_split REGION: the distributed deployment on the real broker and Redis that ops/test.sh
# starts (KAFKA_BROKERS, REDIS_ADDR): `registry project` (PROJ), `registry ingest` (ING) and two
# `registry front` processes (FRONT1, FRONT2, with device and MQTT ports), sharing DATA=$WORK/data.
start_split() {
  : "${KAFKA_BROKERS:?the real broker is needed: run through ops/test.sh}"
  : "${REDIS_ADDR:?Redis is needed: run through ops/test.sh}"
  DATA="$WORK/data"
  COMMON=(--data "$DATA" --region "$1" --redis "$REDIS_ADDR" --kafka "$KAFKA_BROKERS")
  start_role PROJ project "${COMMON[@]}"
  start_role ING ingest "${COMMON[@]}"
  start_role FRONT1 front "${COMMON[@]}"
  start_role FRONT2 front "${COMMON[@]}"
}
