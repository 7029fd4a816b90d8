#!/usr/bin/env bash
# iSCSI digests (CRC32C, through ISA-L): QEMU's iscsi driver with header-digest=crc32c writes and
# reads a LUN (qemu-img convert and qemu-io, data checked against the file); a small initiator of
# our own (iscsi_digest_client.py) negotiates header and data digests, writes and reads a block
# and checks every digest lunad sends; a wrong data digest gets a Reject (Data-Digest-Error) and
# the connection closes, with lunad still serving.  NOP-In pings (iscsi_ping_interval 1 s here):
# a silent initiator is pinged, and closed once it stops answering.
source "$(dirname "$0")/lib.sh"
for tool in qemu-img qemu-io timeout; do
  command -v "$tool" >/dev/null || fail "$tool is missing (deploy/install-deps.sh installs it)"
done
cd "$WORK"

PORT=$(free_port)
IQN=iqn.2026-12.org.luna.test:digests$$
truncate -s 32M disk.img
printf '[server]\niscsi_ping_interval = 1\n' >ping.ini
luna_start --config ping.ini --iscsi "127.0.0.1:$PORT" --target "$IQN=d" --export "d=$WORK/disk.img"
CLIENT="$SYSTEM_PYTHON $(dirname "$0")/iscsi_digest_client.py"

if qemu-img --help | grep -q "Supported formats:.*iscsi" && [ -e /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ]; then
  OPTS="driver=iscsi,transport=tcp,portal=127.0.0.1:$PORT,target=$IQN,lun=0,header-digest=crc32c"
  head -c 4M /dev/urandom >data.bin
  timeout 60 qemu-img convert -n -f raw --target-image-opts data.bin "$OPTS" || fail "qemu-img convert with header digests"
  cmp -n $((4 * 1024 * 1024)) data.bin disk.img || fail "disk.img does not hold what qemu-img wrote"
  timeout 60 qemu-io --image-opts "$OPTS" -c "write -P 0x5a 8M 1M" -c "read -P 0x5a 8M 1M" >io.out ||
    { cat io.out; fail "qemu-io with header digests"; }
  grep -q "read 1048576/1048576" io.out || { cat io.out; fail "qemu-io read"; }
  grep -q "header digest" "$LUNAD_LOG" || fail "lunad did not negotiate header digests with QEMU"
  pass "QEMU with header-digest=crc32c: 4 MiB written and read back, the file holds it"
else
  echo "SKIP: qemu's iscsi driver is not installed (Debian package qemu-block-extra)"
fi

$CLIENT 127.0.0.1 "$PORT" "$IQN" || fail "header and data digests"
grep -q "header digest, data digest" "$LUNAD_LOG" || fail "lunad did not negotiate both digests"
pass "header and data digests with our own initiator"
$CLIENT 127.0.0.1 "$PORT" "$IQN" --corrupt-data || fail "a wrong data digest"
grep -q "data digest error" "$LUNAD_LOG" || fail "the data digest error is not logged"
luna_alive
pass "a wrong data digest: Reject (0x02), the connection ends, lunad serves on"
$CLIENT 127.0.0.1 "$PORT" "$IQN" --ping || fail "NOP-In pings"
grep -q "no answer to a NOP-In ping" "$LUNAD_LOG" || fail "the dead connection is not logged"
luna_alive
pass "a silent initiator is pinged (NOP-In), and its connection closed when it stops answering"
luna_stop
