#!/usr/bin/env bash
# Extended headers (64-bit requests and replies, NBD_OPT_EXTENDED_HEADERS),
# which Debian 12's libnbd cannot negotiate: checked by the project's own
# client, nbd_extended_client, on an export larger than 4 GiB so requests
# with lengths that do not fit in 32 bits are exercised too.
source "$(dirname "$0")/lib.sh"

client=${LUNA_TEST_BIN:-${LUNA_TEST_BUILD:-build}/tests}/nbd_extended_client
[ -x "$client" ] || fail "$client is missing: build the target nbd_extended_client (tests/integration/nbd_extended.cmake)"

truncate -s 6G "$WORK/big.img"
truncate -s 64M "$WORK/small.img"
port=$(free_port)
luna_start --nbd "127.0.0.1:$port" --export "big=$WORK/big.img" --export "small=$WORK/small.img,cache=none"

"$client" 127.0.0.1 "$port" big || fail "nbd_extended_client on a 6 GiB export"
luna_alive
"$client" 127.0.0.1 "$port" small || fail "nbd_extended_client on a 64 MiB cache=none export"
luna_alive
# Clients without extended headers still work next to them.
qemu-io -r -f raw -c 'read 0 64k' "nbd://127.0.0.1:$port/big" >/dev/null || fail "a plain client after extended-header ones"
allocated=$(( $(stat -c %b "$WORK/big.img") * 512 ))
[ "$allocated" -lt $((1024 * 1024 * 1024)) ] || fail "the 6 GiB sparse image now has $allocated bytes allocated"
luna_stop
pass "extended headers on a 6 GiB and a 64 MiB export"
