#!/usr/bin/env bash
# run.sh - builds one libFuzzer harness with clang and runs it for a bounded time over its corpus
# (the seeds in tests/fuzz/corpus_NAME plus what it finds, kept in the build directory). CTest runs
# each parser's fuzzer briefly on every build; run longer by hand:
#   tests/fuzz/run.sh codec|http|pki|mqtt|shadow|tls13|eventlog|chunked|device_text SECONDS OUT_DIR SCHEMAS_EMBEDDED_C
set -euo pipefail
name=$1 seconds=$2 out=$3 schemas_c=$4
top=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out/corpus_$name"
flags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I"$top" -I"$top/common")
case "$name" in
  codec) clang "${flags[@]}" "$top/schemas/codec.c" "$top/common/err.c" "$schemas_c" \
           "$top/tests/fuzz/fuzz_codec.c" $(pkg-config --cflags --libs avro-c jansson) -lm -o "$out/fuzz_$name" ;;
  http)  clang "${flags[@]}" "$top/tests/fuzz/fuzz_http.c" "$top/common/err.c" \
           "$top/common/keystore.c" "$top/common/pki.c" $(pkg-config --cflags --libs libuv jansson openssl) -lhttp_parser -o "$out/fuzz_$name" ;;
  pki)   clang "${flags[@]}" "$top/tests/fuzz/fuzz_pki.c" "$top/common/pki.c" "$top/common/err.c" \
           $(pkg-config --cflags --libs openssl) -o "$out/fuzz_$name" ;;
  mqtt)  clang "${flags[@]}" "$top/tests/fuzz/fuzz_mqtt.c" "$top/common/mqtt_codec.c" \
           "$top/common/err.c" -o "$out/fuzz_$name" ;;
  shadow) clang "${flags[@]}" "$top/tests/fuzz/fuzz_shadow.c" "$top/common/shadow.c" "$top/common/jsonfast.c" \
           "$top/common/err.c" $(pkg-config --cflags --libs jansson) -o "$out/fuzz_$name" ;;
  tls13) clang "${flags[@]}" "$top/tests/fuzz/fuzz_tls13.c" "$top/common/tls13.c" \
           "$top/common/ids.c" "$top/common/err.c" $(pkg-config --cflags --libs openssl) -o "$out/fuzz_$name" ;;
  eventlog) clang "${flags[@]}" "$top/tests/fuzz/fuzz_eventlog.c" "$top/common/eventlog.c" \
           "$top/common/eventlog_embedded.c" "$top/common/eventlog_upgrade.c" \
           "$top/common/eventlog_kafka.c" "$top/common/err.c" \
           $(pkg-config --cflags --libs rocksdb rdkafka jansson) -lisal -lpthread -o "$out/fuzz_$name" ;;
  chunked) clang "${flags[@]}" "$top/tests/fuzz/fuzz_chunked.c" "$top/projector/chunked.c" \
           $(pkg-config --cflags --libs rocksdb) -o "$out/fuzz_$name" ;;
  device_text) clang "${flags[@]}" "$top/tests/fuzz/fuzz_device_text.c" "$top/projector/device_text.c" \
           "$top/common/jsonfast.c" "$top/common/err.c" $(pkg-config --cflags --libs jansson) -o "$out/fuzz_$name" ;;
  *) echo "unknown fuzzer $name" >&2; exit 2 ;;
esac
"$out/fuzz_$name" -max_total_time="$seconds" -print_final_stats=1 "$out/corpus_$name" \
  "$top/tests/fuzz/corpus_$name" 2>&1 | tail -n 12
