#!/usr/bin/env bash
# Quick start: install what is missing, build, and run lunad in the foreground on its
# embedded default configuration (NBD on 127.0.0.1:10809 exporting "demo", a 1 GiB
# sparse image created under ./var/ on first start).  Ctrl-C stops it cleanly.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

deploy/install-deps.sh build
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLUNA_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)"

cat <<'MSG'

lunad is starting with its embedded default configuration.
From another terminal, try:
    nbdinfo nbd://127.0.0.1:10809/demo
    qemu-img info nbd://127.0.0.1:10809/demo
Press Ctrl-C to stop.

MSG
exec build/bin/lunad
