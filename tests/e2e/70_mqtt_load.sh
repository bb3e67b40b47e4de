#!/usr/bin/env bash
# The MQTT load benchmark in its small form (2,000 connections; the 200,000 one runs on demand):
# 2,000 devices bootstrap through the device port, then hold 2,000 mutual-TLS MQTT connections
# for 5 seconds with no failure (tests/bench/bench_mqtt.sh; Mosquitto runs beside it as the peer).
source "$E2E_LIB"
build=$(dirname "$REGISTRY_BIN")
if bash "$(dirname "$E2E_LIB")/../bench/bench_mqtt.sh" "$build" 2000 5 > "$WORK/bench.out" 2>&1; then
  pass
else
  fail "bench_mqtt: $(tail -n 8 "$WORK/bench.out")"
fi
grep -q "^held=2000 failed=0" "$WORK/bench.out" && pass || fail "not all held: $(grep held "$WORK/bench.out")"
cat "$WORK/bench.out" | grep -E "connected=|held=|ratio" || true
finish
