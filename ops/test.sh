#!/usr/bin/env bash
# ops/test.sh - the README's second command: install everything the tests need, start Redis and
# a real single-node Kafka broker (KRaft) on loopback, build with AddressSanitizer and UBSan, run
# the whole suite with CTest (unit tests, end-to-end tests on the embedded default, end-to-end
# tests of the split deployment over Kafka and Redis, crash tests), and stop the services.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
build="$top/build-test"

"$here/deps.sh"
"$here/kafka.sh" fetch

cleanup() {
  "$here/kafka.sh" stop >/dev/null 2>&1 || true
  "$here/redis.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$here/redis.sh" start
"$here/kafka.sh" start
export REDIS_ADDR="127.0.0.1:${REDIS_PORT:-16379}"
export KAFKA_BROKERS="127.0.0.1:${KAFKA_PORT:-19092}"

cmake -S "$top" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DREGISTRY_SANITIZE=ON >/dev/null
cmake --build "$build"
# LeakSanitizer is on: every test ends with its memory accounted for.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ctest --test-dir "$build" --output-on-failure -j "${TEST_JOBS:-2}" "$@"
