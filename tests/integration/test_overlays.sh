#!/usr/bin/env bash
# Copy-on-write overlays over one golden image, with real clients:
# ephemeral overlays are private to each connection and vanish with it,
# persistent ones (NAME/IDENTITY) are shared by an identity's connections
# and survive a restart of lunad; the golden image never changes, and every
# overlay left behind passes qemu-img check with the golden image as its
# backing file.
source "$(dirname "$0")/lib.sh"

golden=$WORK/golden.raw
overlays=$WORK/overlays
scratch=$WORK/scratch
mkdir -p "$scratch"
head -c 32M /dev/urandom >"$golden"
golden_sum=$(sha256sum <"$golden")
head -c 3M /dev/urandom >"$WORK/a.bin"
head -c 3M /dev/urandom >"$WORK/b.bin"

start() {
  port=$(free_port)
  luna_start --nbd "127.0.0.1:$port" \
    --export "eph=$golden,overlay=ephemeral:$scratch" \
    --export "farm=$golden,overlay=persistent:$overlays"
  uri=nbd://127.0.0.1:$port
}
# first N bytes of an export, or of a file, as a checksum
head_sum() { nbdcopy "$1" - | head -c "$2" | sha256sum; }

start

# Ephemeral: what advertises, what each connection sees.
nbdinfo "$uri/eph" >"$WORK/eph.info"
grep -q "is_read_only: false" "$WORK/eph.info" || fail "ephemeral export must be writable"
grep -q "can_multi_conn: false" "$WORK/eph.info" || fail "ephemeral overlays are per connection: no multi-conn"
nbdcopy "$WORK/a.bin" "$uri/eph" || fail "write to an ephemeral overlay"
[ "$(nbdcopy "$uri/eph" - | sha256sum)" = "$golden_sum" ] ||
  fail "a new connection must start from the golden image again"
[ -z "$(ls -A "$scratch")" ] || fail "ephemeral overlays must not stay on disk: $(ls "$scratch")"
# Two clients at once, each on its own overlay.
"$SYSTEM_PYTHON" - "$uri/eph" <<'PY' || fail "two simultaneous ephemeral clients saw each other's writes"
import sys, nbd
a, b = nbd.NBD(), nbd.NBD()
a.connect_uri(sys.argv[1]); b.connect_uri(sys.argv[1])
before = b.pread(65536, 0)
a.pwrite(b"\xaa" * 65536, 0)
b.pwrite(b"\xbb" * 4096, 65536)
assert a.pread(65536, 0) == b"\xaa" * 65536
assert b.pread(65536, 0) == before, "b sees a's write"
assert a.pread(4096, 65536) != b"\xbb" * 4096, "a sees b's write"
a.shutdown(); b.shutdown()
PY
pass "ephemeral overlays: private per connection, writable, gone afterwards"

# Persistent: one overlay per identity.
nbdinfo "$uri/farm/m1" | grep -q "can_multi_conn: true" || fail "persistent overlays are shared: multi-conn"
nbdcopy "$WORK/a.bin" "$uri/farm/m1" || fail "write m1"
nbdcopy "$WORK/b.bin" "$uri/farm/iqn.2026-11.example:m2" || fail "write m2"
[ "$(head_sum "$uri/farm/m1" 3145728)" = "$(sha256sum <"$WORK/a.bin")" ] || fail "m1 reads its own data"
[ "$(head_sum "$uri/farm/iqn.2026-11.example:m2" 3145728)" = "$(sha256sum <"$WORK/b.bin")" ] ||
  fail "m2 reads its own data"
[ "$(nbdcopy "$uri/farm/m3" - | sha256sum)" = "$golden_sum" ] || fail "a new identity starts from golden"
# Connections of one identity in quick succession: each may find the previous
# one's overlay still closing (its caches written back on the pool).
for i in 1 2 3 4 5 6; do
  nbdinfo "$uri/farm/m1" >/dev/null || fail "connection $i to farm/m1 right after the previous one"
done
# Without an identity, or with one that could escape the directory: refused, lunad unharmed.
if nbdinfo "$uri/farm" >/dev/null 2>&1; then fail "a persistent export without identity must be refused"; fi
if nbdinfo "$uri/farm/..%2Fescape" >/dev/null 2>&1 || nbdinfo "$uri/farm/.hidden" >/dev/null 2>&1; then
  fail "invalid identities must be refused"
fi
luna_alive
pass "persistent overlays: one per identity, refused without a valid identity"

luna_stop
[ "$(sha256sum <"$golden")" = "$golden_sum" ] || fail "the golden image changed"
for overlay in "$overlays"/*.qcow2; do
  qemu-img check "$overlay" >/dev/null || fail "qemu-img check $overlay"
  qemu-img info "$overlay" | grep -q "backing file: $golden" || fail "$overlay does not name the golden image"
done
[ -f "$overlays/m1.qcow2" ] && [ -f "$overlays/iqn.2026-11.example:m2.qcow2" ] || fail "overlay files"

# A restart keeps every identity's changes; qemu-img reads them the same way.
start
[ "$(head_sum "$uri/farm/m1" 3145728)" = "$(sha256sum <"$WORK/a.bin")" ] || fail "m1 lost its data over a restart"
luna_stop
qemu-img convert -O raw "$overlays/m1.qcow2" "$WORK/m1.raw"
[ "$(head -c 3145728 "$WORK/m1.raw" | sha256sum)" = "$(sha256sum <"$WORK/a.bin")" ] ||
  fail "qemu-img reads m1 differently"
cmp -s <(tail -c +3145729 "$WORK/m1.raw") <(tail -c +3145729 "$golden") || fail "m1 beyond its writes is golden"
pass "persistent overlays survive a restart, pass qemu-img check, golden image unchanged"
