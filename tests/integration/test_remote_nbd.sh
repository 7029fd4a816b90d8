#!/usr/bin/env bash
# Remote NBD disks (block/nbd_client): lunad exports a disk served by qemu-nbd on 127.0.0.1
# (and one served over a Unix socket by nbdkit's memory plugin, which allows multi-conn: four
# connections); data written through lunad
# is in qemu-nbd's file, data read through lunad is the file's; a fio crc32c verify run goes
# on while qemu-nbd is killed and started again (the run finishes without an error, lunad
# logs the drop and the reconnection once each); an upstream gone longer than
# reconnect_timeout makes requests fail with EIO while lunad stays up, and serves again once
# it is back; luna-img converts nbd:// to qcow2 and qcow2 into nbd:// (-n), as qemu-img
# compare confirms; an ephemeral overlay over a remote golden image keeps its writes to itself.
source "$(dirname "$0")/lib.sh"

for tool in qemu-nbd qemu-img fio nbdcopy nbdkit; do
  command -v "$tool" >/dev/null || fail "$tool is missing (deploy/install-deps.sh installs it)"
done
need_luna_img qemu-img
cd "$WORK"

QEMU_NBD_PID=
UPSTREAM_PORT=$(free_port)
upstream_start() {
  qemu-nbd -f raw -b 127.0.0.1 -p "$UPSTREAM_PORT" -t -e 8 --cache=writeback upstream.raw >>qemu-nbd.log 2>&1 &
  QEMU_NBD_PID=$!
  for _ in $(seq 1 100); do
    nbdinfo --size "nbd://127.0.0.1:$UPSTREAM_PORT" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  fail "qemu-nbd did not start"
}
upstream_stop() { kill -KILL "$QEMU_NBD_PID" 2>/dev/null || true; wait "$QEMU_NBD_PID" 2>/dev/null || true; }
trap 'status=$?; upstream_stop; _luna_cleanup "$status"' EXIT

qemu-img create -q -f raw upstream.raw 256M
qemu-io -f raw -c 'write -P 3 0 16M' -c 'write -P 4 200M 1M' upstream.raw >/dev/null
upstream_start
PORT=$(free_port)
luna_start --nbd "127.0.0.1:$PORT" --export "r=nbd://127.0.0.1:$UPSTREAM_PORT,reconnect-timeout=30" \
  --export "o=nbd://127.0.0.1:$UPSTREAM_PORT,overlay=ephemeral"
uri="nbd://127.0.0.1:$PORT/r"

# Reads are the upstream file's; writes land in it.
nbdcopy "$uri" read.raw
cmp -s read.raw upstream.raw || fail "reading through lunad differs from the upstream file"
head -c 8M /dev/urandom >data.bin
nbdcopy data.bin "nbd://127.0.0.1:$PORT/r"
nbdinfo --map "$uri" >/dev/null
cmp -s data.bin <(head -c 8M upstream.raw) || fail "writes through lunad are not in the upstream file"
pass "read and write through lunad to qemu-nbd's file (checksums equal)"

# Block status comes from the server (base:allocation): the hole at 100M is reported.
"$SYSTEM_PYTHON" - "$uri" <<'PY' || fail "block status through lunad is wrong"
import nbd, sys
h = nbd.NBD(); h.add_meta_context("base:allocation"); h.connect_uri(sys.argv[1])
seen = []
h.block_status(1 << 20, 100 << 20, lambda ctx, off, entries, err: seen.extend(entries))
assert seen and seen[1] & 1, f"expected a hole at 100M, got {seen[:4]}"
PY
pass "block status passes through (a hole in the upstream file is a hole)"

# An ephemeral overlay over the remote image: its writes stay in the overlay.
"$SYSTEM_PYTHON" - "nbd://127.0.0.1:$PORT/o" <<'PY' || fail "the overlay over a remote base misbehaves"
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
assert h.pread(4096, 200 << 20) == b"\x04" * 4096
h.pwrite(b"\x77" * 4096, 200 << 20)
assert h.pread(4096, 200 << 20) == b"\x77" * 4096
PY
cmp -s <(head -c $((200 * 1048576 + 4096)) upstream.raw | tail -c 4096) <(printf '\x04%.0s' $(seq 4096)) ||
  fail "an overlay write reached the remote base"
pass "an ephemeral overlay over a remote golden image keeps its writes to itself"

# qemu-nbd killed and restarted during a fio verify run.
fio --name=verify --ioengine=nbd --uri="$uri" --numjobs=1 --iodepth=16 --bs=4k --size=48M --offset=32M \
  --rw=randwrite --verify=crc32c --verify_fatal=1 --do_verify=1 --output-format=json --output=fio.json \
  >fio.out 2>&1 &
FIO_PID=$!
sleep 1
upstream_stop
sleep 2
upstream_start
status=0
wait "$FIO_PID" || status=$?
[ "$status" = 0 ] || { tail -n 30 fio.out fio.json; fail "fio failed across the upstream restart (exit $status)"; }
fio_json_ok fio.json || { cat fio.out; fail "fio reported errors"; }
[ "$(grep -c "remote disk nbd://127.0.0.1:$UPSTREAM_PORT: connection lost" "$LUNAD_LOG")" -ge 1 ] ||
  fail "lunad did not log the drop"
grep -q "remote disk nbd://127.0.0.1:$UPSTREAM_PORT: reconnected" "$LUNAD_LOG" ||
  fail "lunad did not log the reconnection"
pass "fio verify survives qemu-nbd killed and restarted (no error, no mismatch; drop and reconnection logged)"
luna_stop

# Upstream gone for longer than reconnect_timeout: EIO, lunad stays up, and recovers.
PORT=$(free_port)
luna_start --nbd "127.0.0.1:$PORT" --export "r=nbd://127.0.0.1:$UPSTREAM_PORT,reconnect-timeout=2"
uri="nbd://127.0.0.1:$PORT/r"
upstream_stop
started=$(date +%s)
"$SYSTEM_PYTHON" - "$uri" <<'PY' || fail "a request to an unreachable remote disk did not fail with EIO"
import errno, nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
try:
    h.pread(4096, 0)
except nbd.Error as e:
    if e.errno in (errno.EIO, "EIO"):  # the binding gives the name
        sys.exit(0)
    print("failed with", e.string)
    sys.exit(1)
print("the read succeeded")
sys.exit(1)
PY
elapsed=$(($(date +%s) - started))
[ "$elapsed" -le 20 ] || fail "the failure took $elapsed s with a 2 s timeout"
luna_alive || fail "lunad died with its upstream gone"
upstream_start
sleep 6
nbdcopy "$uri" again.raw || fail "lunad did not serve again once the upstream came back"
cmp -s again.raw upstream.raw || fail "after the outage lunad reads other data"
pass "upstream gone past the timeout: EIO after ${elapsed}s, lunad up, serving again once it is back"
luna_stop

# luna-img with URLs: info as qemu-img shows it, nbd:// to qcow2, qcow2 into nbd:// (-n).
diff <(qemu-img info "nbd://127.0.0.1:$UPSTREAM_PORT") <("$LUNA_IMG" info "nbd://127.0.0.1:$UPSTREAM_PORT") ||
  fail "luna-img info nbd:// differs from qemu-img's"
diff <(qemu-img info --output=json "nbd://127.0.0.1:$UPSTREAM_PORT") \
  <("$LUNA_IMG" info --output=json "nbd://127.0.0.1:$UPSTREAM_PORT") ||
  fail "luna-img info --output=json nbd:// differs"
"$LUNA_IMG" convert -O qcow2 "nbd://127.0.0.1:$UPSTREAM_PORT" copy.qcow2
qemu-img compare -q copy.qcow2 upstream.raw || fail "convert nbd:// -> qcow2 differs"
qemu-img create -q -f qcow2 source.qcow2 256M
qemu-io -c 'write -P 8 1M 3M' -c 'write -z 10M 1M' source.qcow2 >/dev/null
"$LUNA_IMG" convert -n -O raw source.qcow2 "nbd://127.0.0.1:$UPSTREAM_PORT"
upstream_stop
qemu-img compare -q source.qcow2 upstream.raw || fail "convert qcow2 -> nbd:// differs"
pass "luna-img info nbd:// as qemu-img; convert nbd:// -> qcow2 and qcow2 -> nbd:// (-n) match qemu-img compare"

# A disk over a Unix socket (nbdkit's memory plugin).
nbdkit --unix "$WORK/nbdkit.sock" --pidfile "$WORK/nbdkit.pid" memory 64M
for _ in $(seq 1 100); do [ -s "$WORK/nbdkit.pid" ] && break; sleep 0.05; done
PORT=$(free_port)
luna_start --nbd "127.0.0.1:$PORT" --export "m=nbd+unix:///?socket=$WORK/nbdkit.sock"
# nbdkit allows multi-conn: lunad opens four connections to it.
connections=$(ss -xp | grep -c "pid=$LUNAD_PID," || true)
[ "$connections" -ge 4 ] || fail "lunad has $connections connections to a multi-conn server, expected 4"
head -c 4M /dev/urandom >memory.bin
nbdcopy memory.bin "nbd://127.0.0.1:$PORT/m"
nbdcopy "nbd+unix:///?socket=$WORK/nbdkit.sock" memory-disk.bin
cmp -s <(head -c 4M memory-disk.bin) memory.bin || fail "writes through lunad are not in nbdkit's memory disk"
luna_stop
kill "$(cat "$WORK/nbdkit.pid")"
pass "nbd+unix:// disks (nbdkit memory plugin, multi-conn: $connections connections) read and written through lunad"
