#!/usr/bin/env bash
# libnbd_client (a C program on libnbd) against lunad: multi-conn, 64 requests
# in flight, structured reads over holes, block status after trim and zero,
# FUA and flush reaching the file, and the protocol's error values.  Run once
# over a Unix socket on a writeback/io_uring export and once over TCP on a
# cache=none/aio=threads export, so both I/O paths answer the same checks.
source "$(dirname "$0")/lib.sh"

client=${LUNA_TEST_BIN:-${LUNA_TEST_BUILD:-build}/tests}/libnbd_client
[ -x "$client" ] || fail "$client not built (target libnbd_client, tests/integration/clients.cmake)"

truncate -s 64M "$WORK/rw.img" "$WORK/direct.img" "$WORK/ro.img"
port=$(free_port)
socket=$WORK/lunad.sock
luna_start --nbd "127.0.0.1:$port" --unix "$socket" \
  --export "rw=$WORK/rw.img,cache=writeback,aio=io_uring" \
  --export "direct=$WORK/direct.img,cache=none,aio=threads" \
  --export "ro=$WORK/ro.img,readonly=on"

echo "--- Unix socket, cache=writeback, aio=io_uring"
"$client" "nbd+unix:///rw?socket=$socket" "nbd+unix:///ro?socket=$socket" "$WORK/rw.img" \
  || fail "libnbd_client failed on export rw over $socket"
luna_alive

echo "--- TCP, cache=none, aio=threads"
"$client" "nbd://127.0.0.1:$port/direct" "nbd://127.0.0.1:$port/ro" "$WORK/direct.img" \
  || fail "libnbd_client failed on export direct over 127.0.0.1:$port"
luna_alive

cmp -n $((1024 * 1024)) "$WORK/ro.img" /dev/zero || fail "the read-only export's file was modified"
luna_stop
pass "libnbd client checks over Unix and TCP"
