#!/usr/bin/env bash
# ops/serve.sh - the README's first command: install what the build needs (Debian packages),
# build the `registry` binary (Release), and run it with the embedded defaults: no Kafka, no
# Redis, data in ./registry-data (or $REGISTRY_DATA). Extra arguments go to `registry serve`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")

"$here/deps.sh" >&2
cmake -S "$top" -B "$top/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$top/build" --target registry >&2
exec "$top/build/registry" serve --data "${REGISTRY_DATA:-$top/registry-data}" "$@"
