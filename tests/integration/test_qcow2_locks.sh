#!/usr/bin/env bash
# qcow2 image locking, against lunad itself and against QEMU's tools: what
# docs/qcow2.md promises.  An image lunad writes refuses every other writer
# and QEMU's lock-taking readers, yet qemu-img -U reads it; an image lunad
# only reads (read-only export, backing file) takes any number of readers
# and no writer.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

qemu-img create -q -f qcow2 img.qcow2 16M
qemu-io -c "write -P 0x33 0 1M" img.qcow2 >/dev/null
port=$(free_port)
second_port=$(free_port)

# second_lunad EXPORT-SPEC: start a second lunad on the image; prints its first error line, fails if it serves.
second_lunad_refused() {
  local status=0
  timeout 10 "$LUNAD" --nbd "127.0.0.1:$second_port" --export "$1" >second.log 2>&1 || status=$?
  [ $status -ne 0 ] && [ $status -ne 124 ] && grep -q "the image is in use" second.log
}

luna_start --nbd "127.0.0.1:$port" --export "d=$WORK/img.qcow2,format=qcow2"
second_lunad_refused "e=$WORK/img.qcow2,format=qcow2" || fail "a second lunad writing the image was not refused"
second_lunad_refused "e=$WORK/img.qcow2,format=qcow2,readonly=on" || fail "a reader of an image lunad writes was not refused"
if qemu-io -c "write 0 4k" img.qcow2 >qemu.log 2>&1; then fail "qemu-io wrote an image lunad writes"; fi
grep -q 'Failed to get "write" lock' qemu.log || fail "qemu-io's refusal: $(cat qemu.log)"
if qemu-img info img.qcow2 >qemu.log 2>&1; then fail "qemu-img info without -U opened an image lunad writes"; fi
grep -q 'Failed to get shared "write" lock' qemu.log || fail "qemu-img info's refusal: $(cat qemu.log)"
qemu-img info -U img.qcow2 >/dev/null || fail "qemu-img info -U must read an image lunad serves"
qemu-img check -U img.qcow2 >/dev/null || fail "qemu-img check -U must read an image lunad serves"
luna_stop
pass "an image lunad writes: other writers and lock-taking readers refused, -U readers allowed"

# Read-only: two exports of one image in one lunad, QEMU reading beside them, nobody writing.
luna_start --nbd "127.0.0.1:$port" --export "a=$WORK/img.qcow2,format=qcow2,readonly=on" \
  --export "b=$WORK/img.qcow2,format=qcow2,readonly=on"
qemu-img info img.qcow2 >/dev/null || fail "qemu-img info must read an image lunad only reads"
if qemu-io -c "write 0 4k" img.qcow2 >/dev/null 2>&1; then fail "qemu-io wrote an image lunad reads"; fi
second_lunad_refused "e=$WORK/img.qcow2,format=qcow2" || fail "a writer of an image lunad reads was not refused"
luna_stop
pass "an image lunad only reads: shared by readers, refused to writers"

# A backing file is read: its overlay is served while QEMU reads the base, and nothing writes it.
qemu-img create -q -f qcow2 -b img.qcow2 -F qcow2 top.qcow2
luna_start --nbd "127.0.0.1:$port" --export "t=$WORK/top.qcow2,format=qcow2"
qemu-img info img.qcow2 >/dev/null || fail "qemu-img info must read a backing file lunad reads"
if qemu-io -c "write 0 4k" img.qcow2 >/dev/null 2>&1; then fail "qemu-io wrote a backing file in use"; fi
luna_stop
pass "a backing file lunad reads: readable, not writable"
