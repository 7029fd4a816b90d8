#!/usr/bin/env bash
# lunad as an iSCSI gateway in front of an NBD server (issue 4's remote disks, served as LUNs):
# qemu-nbd serves a raw file, lunad exports it (nbd://) as LUN 0 of an iSCSI target; libiscsi
# initiators (luna-img's iscsi:// client, iscsi-readcapacity16) see its size, read what the file
# holds, and their writes land in the file behind qemu-nbd once lunad has stopped (flushed).
source "$(dirname "$0")/lib.sh"
for tool in qemu-nbd qemu-img qemu-io nbdinfo iscsi-readcapacity16 timeout; do
  command -v "$tool" >/dev/null || fail "$tool is missing (deploy/install-deps.sh installs it)"
done
need_luna_img
cd "$WORK"

QEMU_NBD_PID=
UPSTREAM_PORT=$(free_port)
qemu-img create -q -f raw upstream.raw 64M
qemu-io -f raw -c 'write -P 7 0 8M' upstream.raw >/dev/null
qemu-nbd -f raw -b 127.0.0.1 -p "$UPSTREAM_PORT" -t -e 8 --cache=writeback upstream.raw >>qemu-nbd.log 2>&1 &
QEMU_NBD_PID=$!
trap 'status=$?; kill -KILL "$QEMU_NBD_PID" 2>/dev/null || true; wait "$QEMU_NBD_PID" 2>/dev/null || true; _luna_cleanup "$status"' EXIT
for _ in $(seq 1 100); do
  nbdinfo --size "nbd://127.0.0.1:$UPSTREAM_PORT" >/dev/null 2>&1 && break
  sleep 0.05
done
nbdinfo --size "nbd://127.0.0.1:$UPSTREAM_PORT" >/dev/null || fail "qemu-nbd did not start"

PORT=$(free_port)
IQN=iqn.2026-12.org.luna.test:gateway$$
URL=iscsi://127.0.0.1:$PORT/$IQN/0
luna_start --iscsi "127.0.0.1:$PORT" --target "$IQN=g" --export "g=nbd://127.0.0.1:$UPSTREAM_PORT"

timeout 30 iscsi-readcapacity16 "$URL" >rc.out 2>&1 || { cat rc.out; fail "READ CAPACITY 16 through the gateway"; }
grep -q "Total size:67108864" rc.out || { cat rc.out; fail "the LUN is not the 64 MiB NBD disk"; }
timeout 60 "$LUNA_IMG" convert -O raw "$URL" read.raw || fail "reading the LUN"
cmp read.raw upstream.raw || fail "the LUN does not read what the NBD server's file holds"
pass "the remote NBD disk is an iSCSI LUN: its size and its data"

head -c 4M /dev/urandom >data.bin
timeout 60 "$LUNA_IMG" convert -n -f raw -O raw data.bin "$URL" || fail "writing through the gateway"
timeout 60 "$LUNA_IMG" convert -O raw "$URL" back.raw || fail "reading the LUN back"
cmp -n $((4 * 1024 * 1024)) data.bin back.raw || fail "the LUN does not read back what was written"
luna_stop
cmp -n $((4 * 1024 * 1024)) data.bin upstream.raw || fail "the writes did not reach the NBD server's file"
cmp -i $((4 * 1024 * 1024)) <(head -c 8M upstream.raw) <(head -c 8M read.raw) ||
  fail "bytes beyond the write changed"
pass "writes through the iSCSI gateway land in the file behind the NBD server"
