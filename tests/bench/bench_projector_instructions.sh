#!/usr/bin/env bash
# bench_projector_instructions.sh - the projector's work per command in instructions, by thread,
# counted by valgrind's callgrind: a figure the machine's speed does not move. On the 2-core VM
# this project is measured on, the pinned commands/s of one and the same build moved by 2x within
# an hour; instruction counts tell two builds apart in one run where timings need many pairs.
# They do not show cache misses: a change that only saves those shows in timings alone. Run on
# demand, not by CTest:
#
#   tests/bench/bench_projector_instructions.sh BUILD_DIR [BASE_BUILD_DIR [N]]   (N = 50000)
#
# bench_projector runs N registrations and N/2 metadata patches (its workload) under callgrind,
# about a minute per build for N = 50000, the builds side by side. Printed per build:
# instructions per command of the deciding thread (projector_main), the committing thread,
# RocksDB's flushes and compactions, the events log's writer, and their sum; with
# BASE_BUILD_DIR, the ratio of each to the base's.
set -euo pipefail
build=$(cd "${1:?usage: bench_projector_instructions.sh BUILD_DIR [BASE_BUILD_DIR [N]]}" && pwd)
base=${2:-}
[ -n "$base" ] && base=$(cd "$base" && pwd)
n=${3:-50000}
command -v valgrind >/dev/null || { echo "needs valgrind (ops/deps.sh installs it)" >&2; exit 1; }
work=$(mktemp -d /tmp/bench-instructions.XXXXXX)
trap 'rm -rf "$work"' EXIT
commands=$((n + n / 2 + 1)) # and the tenant's creation

# count NAME BUILD: callgrind's totals of the thread roots, per command, as "root value" lines.
count() {
  mkdir -p "$work/$1"
  valgrind --tool=callgrind --callgrind-out-file="$work/$1.out" \
    "$2/tests/bench_projector" "$work/$1/data" "$n" >"$work/$1.log" 2>&1 ||
    { cat "$work/$1.log" >&2; exit 1; }
  callgrind_annotate --inclusive=yes --threshold=100 "$work/$1.out" | awk -v c="$commands" '
    function put(root) { gsub(",", "", $1); v[root] += $1 / c }
    /\?\?\?:projector_main \[/ { put("deciding") }
    /\?\?\?:committer_main \[/ { put("committing") }
    /rocksdb::DBImpl::BGWorkFlush\(void\*\)/ { put("flushes") }
    /rocksdb::DBImpl::BGWorkCompaction\(void\*\)/ { put("compactions") }
    /\?\?\?:writer_main \[/ { put("log_writer") }
    END {
      n = split("deciding committing flushes compactions log_writer", r, " ")
      for (i = 1; i <= n; i++) { printf "%s %.0f\n", r[i], v[r[i]]; sum += v[r[i]] }
      printf "total %.0f\n", sum
    }' >"$work/$1.txt"
}

count build "$build" &
[ -n "$base" ] && count base "$base" &
wait

echo "instructions per command (callgrind), $commands commands: $n registrations, $((n / 2)) metadata patches"
if [ -z "$base" ]; then
  printf '  %-12s %10s\n' thread "$(basename "$build")"
  while read -r root v; do printf '  %-12s %10s\n' "$root" "$v"; done <"$work/build.txt"
else
  printf '  %-12s %10s %10s %8s\n' thread base build build/base
  paste -d' ' "$work/base.txt" "$work/build.txt" | while read -r root b _ v; do
    ratio=$(awk -v b="$b" -v v="$v" 'BEGIN { if (b > 0) printf "%.3f", v / b; else print "-" }')
    printf '  %-12s %10s %10s %8s\n' "$root" "$b" "$v" "$ratio"
  done
fi
