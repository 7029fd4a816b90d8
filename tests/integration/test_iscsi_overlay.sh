#!/usr/bin/env bash
# Copy-on-write overlays over iSCSI, the initiator's IQN as the overlay's identity (diskless boot:
# one golden image, each machine its own layer): with overlay=persistent:DIR each initiator
# (QEMU, initiator-name=...) writes to DIR/<IQN>.qcow2, sees its own writes, never another's,
# keeps them across reconnects and a lunad restart, and the golden image never changes; with
# overlay=ephemeral a session's writes are gone at logout.
source "$(dirname "$0")/lib.sh"
for tool in qemu-img qemu-io; do
  command -v "$tool" >/dev/null || fail "$tool is missing (deploy/install-deps.sh installs it)"
done
[ -e /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ] ||
  { echo "SKIP: qemu's iscsi driver is not installed (Debian package qemu-block-extra)"; exit 0; }
cd "$WORK"

PORT=$(free_port)
IQN=iqn.2026-12.org.luna.test:farm$$
A=iqn.2026-12.org.luna.test:machine-a
B=iqn.2026-12.org.luna.test:machine-b
qemu-img create -q -f raw golden.img 32M
qemu-io -f raw -c "write -P 0x11 0 32M" golden.img >/dev/null
sha_golden=$(sha256sum <golden.img)
mkdir overlays

opts() { # INITIATOR LUN
  echo "driver=iscsi,transport=tcp,portal=127.0.0.1:$PORT,target=$IQN,lun=$2,initiator-name=$1"
}
io() { # INITIATOR LUN COMMAND...: run qemu-io commands, fail on any error
  local who=$1 lun=$2
  shift 2
  local args=()
  for command in "$@"; do args+=(-c "$command"); done
  timeout 60 qemu-io --image-opts "$(opts "$who" "$lun")" "${args[@]}" >io.out 2>&1 || { cat io.out; fail "qemu-io as $who: $*"; }
  if grep -q "Pattern verification failed\|failed" io.out; then cat io.out; fail "as $who: $*"; fi
}

luna_start --iscsi "127.0.0.1:$PORT" --target "$IQN=farm,scratch" \
  --export "farm=$WORK/golden.img,overlay=persistent:$WORK/overlays" \
  --export "scratch=$WORK/golden.img,overlay=ephemeral:$WORK"
io "$A" 0 "write -P 0xaa 1M 2M" "read -P 0xaa 1M 2M"
io "$B" 0 "read -P 0x11 1M 2M" "write -P 0xbb 8M 1M"
io "$A" 0 "read -P 0xaa 1M 2M" "read -P 0x11 8M 1M"
[ -f "overlays/$A.qcow2" ] && [ -f "overlays/$B.qcow2" ] || { ls overlays; fail "no overlay per IQN in overlays/"; }
[ "$(sha256sum <golden.img)" = "$sha_golden" ] || fail "the golden image changed"
pass "persistent: each IQN writes its own overlays/<IQN>.qcow2 and sees only its own writes"

luna_stop
luna_start --iscsi "127.0.0.1:$PORT" --target "$IQN=farm,scratch" \
  --export "farm=$WORK/golden.img,overlay=persistent:$WORK/overlays" \
  --export "scratch=$WORK/golden.img,overlay=ephemeral:$WORK"
io "$A" 0 "read -P 0xaa 1M 2M"
io "$B" 0 "read -P 0xbb 8M 1M" "read -P 0x11 1M 1M"
for who in "$A" "$B"; do
  qemu-img check -q "overlays/$who.qcow2" || fail "qemu-img check overlays/$who.qcow2"
done
pass "persistent: the layers survive a lunad restart and pass qemu-img check"

io "$A" 1 "write -P 0xcc 0 1M" "read -P 0xcc 0 1M"
io "$A" 1 "read -P 0x11 0 1M"
[ "$(sha256sum <golden.img)" = "$sha_golden" ] || fail "the golden image changed"
pass "ephemeral: a session's writes are gone at logout; the golden image is untouched"
luna_stop
