#!/usr/bin/env bash
# ops/deps.sh — install every Debian 12 package the build and the test suite need.
#
# Why: CI and fresh developer machines start from a bare image; nothing installed
# by hand survives a machine change, so the repo itself must install its toolchain,
# C libraries and the external services the tests run against (Kafka via Maven +
# Java, Redis, Mosquitto, PostgreSQL).
#
# Idempotent and fast: if dpkg already reports every package as installed, apt is
# not touched at all (~1 s). Otherwise it runs `apt-get update` once and a single
# non-interactive install. Needs root (or sudo); works with no terminal/stdin (CI).
#
# Usage: ops/deps.sh            install what is missing
#        ops/deps.sh --list     print the package list and exit
#        ops/deps.sh --check    exit 0 if everything is installed, 1 otherwise
set -euo pipefail

PACKAGES=(
  # toolchain (libclang-rt-14-dev: the sanitizer and libFuzzer runtimes the fuzz tests link,
  # only recommended by clang-14, so --no-install-recommends below would leave it out)
  build-essential cmake ninja-build pkg-config clang clang-format libclang-rt-14-dev
  # C libraries
  librdkafka-dev librocksdb-dev libavro-dev libuv1-dev libhiredis-dev libssl-dev
  libhttp-parser-dev libjansson-dev libisal-dev libcmocka-dev libmosquitto-dev libjemalloc-dev
  # services and their clients used by the tests
  redis-server redis-tools mosquitto mosquitto-clients postgresql postgresql-contrib
  kcat
  # Kafka broker runs from Maven-resolved jars on a JRE (see ops/kafka.sh)
  maven openjdk-17-jre-headless ca-certificates
  # misc tools (wrk and valgrind: the lookup and instruction-count benchmarks)
  curl openssl wrk valgrind python3
)

missing_packages() {
  local p status
  for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    [[ "$status" == ii* ]] || printf '%s\n' "$p"
  done
}

case "${1:-}" in
  --list) printf '%s\n' "${PACKAGES[@]}"; exit 0 ;;
  --check)
    mapfile -t m < <(missing_packages)
    if [[ ${#m[@]} -eq 0 ]]; then exit 0; fi
    echo "deps.sh: missing: ${m[*]}" >&2; exit 1 ;;
  ""|install) ;;
  *) echo "usage: $0 [--list|--check]" >&2; exit 2 ;;
esac

mapfile -t MISSING < <(missing_packages)
if [[ ${#MISSING[@]} -eq 0 ]]; then
  echo "deps.sh: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root or sudo to install: ${MISSING[*]}" >&2; exit 1; }
  SUDO=(sudo -n)
fi

echo "deps.sh: installing ${#MISSING[@]} missing package(s): ${MISSING[*]}"
export DEBIAN_FRONTEND=noninteractive
# Package postinst scripts (postgresql, redis, mosquitto) try to start their
# system services; in containers without an init system that is either a no-op
# or harmless. The tests start their own instances on private ports.
# Only the missing packages are named, so already-installed ones are not
# upgraded as a side effect (keeps reruns cheap and predictable).
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${MISSING[@]}" </dev/null

mapfile -t STILL < <(missing_packages)
if [[ ${#STILL[@]} -ne 0 ]]; then
  echo "deps.sh: still missing after install: ${STILL[*]}" >&2
  exit 1
fi
echo "deps.sh: done"
