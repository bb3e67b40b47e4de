#!/usr/bin/env bash
# ops/redis.sh — start/stop a throw-away Redis for the test suite.
#
# Why: the projector/query tests need a real Redis, but must not depend on (or
# disturb) a system-wide redis service. This runs Debian's redis-server as a
# private, non-persistent instance (no RDB, no AOF) on 127.0.0.1 on its own
# port, daemonized with its pid file, log and working dir in a temp dir.
#
# Usage: ops/redis.sh start     start (no-op if ours is already running), wait for PING
#        ops/redis.sh stop      shut it down and remove its temp dir
#        ops/redis.sh status    exit 0 if it answers PING, 1 otherwise
#
# Environment (all optional):
#   REDIS_PORT           port on 127.0.0.1              (16379)
#   REDIS_DIR            pid file, log, working dir     (/tmp/registry-redis-$REDIS_PORT)
#   REDIS_START_TIMEOUT  seconds to wait for PING       (10)
#   REDIS_STOP_TIMEOUT   seconds before KILL            (10)
set -euo pipefail

REDIS_PORT="${REDIS_PORT:-16379}"
REDIS_DIR="${REDIS_DIR:-/tmp/registry-redis-$REDIS_PORT}"
REDIS_START_TIMEOUT="${REDIS_START_TIMEOUT:-10}"
REDIS_STOP_TIMEOUT="${REDIS_STOP_TIMEOUT:-10}"
PIDFILE="$REDIS_DIR/redis.pid"
LOGFILE="$REDIS_DIR/redis.log"

log() { echo "redis.sh: $*"; }
die() { echo "redis.sh: ERROR: $*" >&2; exit 1; }

# True if pid exists and is not a zombie (a daemon that exited may linger as a
# zombie until its adoptive parent reaps it; kill -0 alone would say "alive").
alive() {
  local st
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
  [[ -n "$st" && "$st" != Z && "$st" != X ]]
}

cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
pong() { [[ "$(cli ping 2>/dev/null)" == "PONG" ]]; }

our_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  grep -q redis-server "/proc/$pid/comm" 2>/dev/null || return 1
  echo "$pid"
}

show_log_tail() {
  if [[ -f "$LOGFILE" ]]; then
    echo "----- last 30 lines of $LOGFILE -----" >&2
    tail -n 30 "$LOGFILE" >&2
    echo "-----" >&2
  fi
}

cmd_start() {
  command -v redis-server >/dev/null || die "redis-server not found (run ops/deps.sh)"
  command -v redis-cli >/dev/null || die "redis-cli not found (run ops/deps.sh)"
  local pid
  if pid="$(our_pid)" && pong; then
    log "already running (pid $pid) on 127.0.0.1:$REDIS_PORT"
    return 0
  fi
  if pong; then
    die "port $REDIS_PORT already answers PING but it is not our instance (no live pid in $PIDFILE)"
  fi
  mkdir -p "$REDIS_DIR"
  rm -f "$PIDFILE"
  if ! redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
        --daemonize yes --pidfile "$PIDFILE" --logfile "$LOGFILE" \
        --dir "$REDIS_DIR" --save '' --appendonly no \
        --protected-mode yes --databases 16 </dev/null; then
    show_log_tail
    die "redis-server failed to start"
  fi
  local start=$SECONDS
  until pong; do
    if (( SECONDS - start >= REDIS_START_TIMEOUT )); then
      show_log_tail
      die "redis not answering PING on 127.0.0.1:$REDIS_PORT after ${REDIS_START_TIMEOUT}s"
    fi
    sleep 0.1
  done
  log "ready on 127.0.0.1:$REDIS_PORT (pid $(cat "$PIDFILE" 2>/dev/null || echo '?'))"
}

cmd_stop() {
  local pid
  if pid="$(our_pid)"; then
    log "stopping redis (pid $pid)"
    cli shutdown nosave >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + REDIS_STOP_TIMEOUT))
    while alive "$pid" && (( SECONDS < deadline )); do sleep 0.1; done
    if alive "$pid"; then
      log "still alive after ${REDIS_STOP_TIMEOUT}s, sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  else
    log "not running"
  fi
  # remove only what we put there (no persistence, so just pid file and log)
  rm -f "$PIDFILE" "$LOGFILE"
  rmdir "$REDIS_DIR" 2>/dev/null || true
}

cmd_status() {
  local pid
  if pid="$(our_pid)" && pong; then
    log "running (pid $pid) on 127.0.0.1:$REDIS_PORT"
    return 0
  fi
  log "not running"
  return 1
}

case "${1:-}" in
  start)  cmd_start ;;
  stop)   cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
