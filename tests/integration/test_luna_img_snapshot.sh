#!/usr/bin/env bash
# luna-img snapshot against qemu-img snapshot.  On v3 and v2 images, 512-byte and 64 KiB
# clusters, refcount_bits 16 and 64, extended L2, compressed clusters and an overlay over a
# backing file, the same sequence runs on two copies, one with each tool: create, write
# (qemu-io), create again, apply the first, write, delete, apply by id, delete the rest.  After
# every step both copies pass qemu-img check with no leak, read the same (qemu-img compare)
# and have the same virtual size and snapshot names; after an apply the image reads what it
# read when the snapshot was taken, and every snapshot reads (qemu-img convert -l) what the
# image held when it was taken.  Snapshots made by one tool are listed identically, applied
# and deleted by the other.  lunad serves a snapshotted image, its writes copy shared
# clusters and leave the snapshot intact.  Error cases match qemu-img's messages and exit codes.
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img qemu-io
cd "$WORK"

as_luna() { sed -e 's/^qemu-img: /luna-img: /' -e "s/Try 'qemu-img /Try 'luna-img /" "$1"; }

clean() { # clean LABEL IMAGE: check passes with no leak
  qemu-img check "$2" >check.out 2>&1 || { cat check.out; fail "$1: qemu-img check $2 failed"; }
  grep -q "leaked" check.out && { cat check.out; fail "$1: $2 leaks clusters"; }
  return 0
}

names() { qemu-img snapshot -l "$1" | awk 'NR > 2 { print $1, $2 }'; }
size_of() { qemu-img info --output=json "$1" | "$SYSTEM_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }

# step LABEL ARGS...: luna-img snapshot ARGS on l.qcow2, qemu-img snapshot ARGS on q.qcow2; compare.
step() {
  local label=$1; shift
  qemu-img snapshot "$@" q.qcow2 || fail "$label: qemu-img snapshot $* failed"
  "$LUNA_IMG" snapshot "$@" l.qcow2 || fail "$label: luna-img snapshot $* failed"
  clean "$label" q.qcow2
  clean "$label" l.qcow2
  qemu-img compare -q l.qcow2 q.qcow2 || fail "$label: the copies read differently after snapshot $*"
  [ "$(size_of l.qcow2)" = "$(size_of q.qcow2)" ] || fail "$label: sizes differ after snapshot $*"
  [ "$(names l.qcow2)" = "$(names q.qcow2)" ] || fail "$label: snapshot lists differ: $(names l.qcow2) / $(names q.qcow2)"
}

write() { qemu-io -f qcow2 "${@/#/-c}" l.qcow2 >/dev/null; qemu-io -f qcow2 "${@/#/-c}" q.qcow2 >/dev/null; }

# snapshot_reads LABEL NAME RAW: the snapshot NAME of l.qcow2 reads as RAW.
snapshot_reads() {
  qemu-img convert -l "snapshot.name=$2" -O raw l.qcow2 snap.raw
  cmp -s snap.raw "$3" || fail "$1: snapshot $2 no longer reads what the image held when it was taken"
}

sequence() {
  local label=$1 options=$2 backing_args=()
  rm -f l.qcow2 q.qcow2 base.raw
  if [ "${3:-}" = backing ]; then
    qemu-img create -q -f raw base.raw 6M
    qemu-io -f raw -c 'write -P 9 0 6M' base.raw >/dev/null
    backing_args=(-b base.raw -F raw)
  fi
  qemu-img create -q -f qcow2 -o "$options" "${backing_args[@]}" q.qcow2 6M
  if [ "${3:-}" = compressed ]; then
    qemu-img create -q -f raw c.raw 6M
    qemu-io -f raw -c 'write -P 5 0 2M' c.raw >/dev/null
    rm q.qcow2
    qemu-img convert -q -c -f raw -O qcow2 -o "$options" c.raw q.qcow2
  fi
  qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -z 1M 64k' -c 'write -P 2 3M 100k' q.qcow2 >/dev/null
  cp q.qcow2 l.qcow2
  qemu-img convert -O raw l.qcow2 at-first.raw
  step "$label: create" -c first
  snapshot_reads "$label" first at-first.raw
  write 'write -P 3 512k 1M' 'write -z 0 4k' 'write -P 4 5M 64k' 'discard 3M 64k'
  qemu-img convert -O raw l.qcow2 at-second.raw
  step "$label: create again" -c second
  snapshot_reads "$label" first at-first.raw
  snapshot_reads "$label" second at-second.raw
  write 'write -P 6 0 2M'
  step "$label: apply first" -a first
  qemu-img convert -O raw l.qcow2 now.raw
  cmp -s now.raw at-first.raw || fail "$label: after apply the image does not read as when 'first' was taken"
  snapshot_reads "$label" second at-second.raw
  write 'write -P 7 4M 1M'
  step "$label: delete first" -d first
  snapshot_reads "$label" second at-second.raw
  step "$label: apply by id" -a 2
  qemu-img convert -O raw l.qcow2 now.raw
  cmp -s now.raw at-second.raw || fail "$label: after apply by id the image does not read as 'second'"
  step "$label: delete the last" -d second
  [ -z "$(names l.qcow2)" ] || fail "$label: snapshots left: $(names l.qcow2)"
  pass "$label: create, apply, delete as qemu-img does, check clean and leak-free after each step"
}

sequence "v3, 64 KiB clusters" "compat=1.1"
sequence "v2" "compat=0.10"
sequence "512-byte clusters" "cluster_size=512"
sequence "refcount_bits=64" "refcount_bits=64"
sequence "extended L2" "extended_l2=on,cluster_size=128k"
sequence "compressed clusters" "compat=1.1" compressed
sequence "overlay over a raw base" "compat=1.1" backing

# Apply restores the virtual size the snapshot was taken at.
rm -f l.qcow2 q.qcow2
qemu-img create -q -f qcow2 q.qcow2 4M
qemu-io -c 'write -P 1 0 4M' q.qcow2 >/dev/null
cp q.qcow2 l.qcow2
step "size: create" -c small
qemu-img resize -q l.qcow2 64M
qemu-img resize -q q.qcow2 64M
qemu-io -c 'write -P 2 40M 1M' l.qcow2 >/dev/null
qemu-io -c 'write -P 2 40M 1M' q.qcow2 >/dev/null
step "size: apply" -a small
[ "$(size_of l.qcow2)" = 4194304 ] || fail "apply did not restore the 4 MiB size: $(size_of l.qcow2)"
pass "apply restores the virtual size (64 MiB back to 4 MiB), as qemu-img"

# Each tool's snapshots, listed, applied and deleted by the other.
rm -f x.qcow2
qemu-img create -q -f qcow2 x.qcow2 2M
qemu-io -c 'write -P 1 0 1M' x.qcow2 >/dev/null
qemu-img snapshot -c by-qemu x.qcow2
"$LUNA_IMG" snapshot -c by-luna x.qcow2
qemu-io -c 'write -P 2 0 2M' x.qcow2 >/dev/null
diff <(qemu-img snapshot -l x.qcow2) <("$LUNA_IMG" snapshot -l x.qcow2) || fail "snapshot -l prints differently"
diff <(qemu-img info x.qcow2) <("$LUNA_IMG" info x.qcow2) >/dev/null ||
  fail "info shows the snapshots differently: $(diff <(qemu-img info x.qcow2) <("$LUNA_IMG" info x.qcow2))"
"$LUNA_IMG" snapshot -a by-qemu x.qcow2
qemu-io -c 'read -P 1 0 1M' -c 'read -P 0 1M 1M' x.qcow2 | grep -q "read 1048576/1048576 bytes at offset 1048576" ||
  fail "luna-img snapshot -a of qemu-img's snapshot reads wrong"
qemu-img snapshot -a by-luna x.qcow2
clean "cross apply" x.qcow2
qemu-img snapshot -d by-luna x.qcow2
"$LUNA_IMG" snapshot -d by-qemu x.qcow2
clean "cross delete" x.qcow2
pass "qemu-img and luna-img list, apply and delete each other's snapshots"

# lunad serves a snapshotted image: its writes copy shared clusters, the snapshot stays.
rm -f s.qcow2
qemu-img create -q -f qcow2 s.qcow2 8M
qemu-io -c 'write -P 1 0 8M' s.qcow2 >/dev/null
"$LUNA_IMG" snapshot -c before s.qcow2
qemu-img convert -l snapshot.name=before -O raw s.qcow2 before.raw
PORT=$(free_port)
luna_start --nbd "127.0.0.1:$PORT" --export "s=$WORK/s.qcow2,format=qcow2"
"$SYSTEM_PYTHON" - "nbd://127.0.0.1:$PORT/s" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
for offset in range(0, 8 << 20, 1 << 20):
    h.pwrite(b"\x42" * 4096, offset + 12345)
h.flush()
PY
luna_stop
clean "lunad writes" s.qcow2
qemu-img convert -l snapshot.name=before -O raw s.qcow2 after.raw
cmp -s before.raw after.raw || fail "writes through lunad changed the snapshot"
qemu-io -c 'read -P 0x42 12345 4096' -c 'read -P 1 0 12345' s.qcow2 | grep -q "read 12345/12345" ||
  fail "writes through lunad are not in the active image"
pass "lunad writes to a snapshotted image copy shared clusters; check clean, snapshot intact"

# Errors: same messages and exit codes as qemu-img (qemu-img's raw-probing warnings aside).
qemu-img create -q -f raw r.raw 1M
qemu-img create -q -f qcow2 -o refcount_bits=1 r1.qcow2 1M
qemu-io -c 'write 0 64k' r1.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o data_file=d.raw df.qcow2 1M
qemu-img create -q -f qcow2 e.qcow2 1M
same_error() {
  local label=$1; shift
  local qs=0 ls=0
  qemu-img snapshot "$@" >q.out 2>q.err || qs=$?
  "$LUNA_IMG" snapshot "$@" >l.out 2>l.err || ls=$?
  [ "$qs" = "$ls" ] || fail "$label: exit $ls, qemu-img $qs ($(cat l.err))"
  diff <(as_luna q.err | grep -v "^WARNING\|^  ") l.err >/dev/null ||
    fail "$label: messages differ: $(diff <(as_luna q.err | grep -v "^WARNING\|^  ") l.err)"
  cmp -s q.out l.out || fail "$label: output differs"
  pass "$label: exit $ls $(head -n 1 l.err)"
}
same_error "apply an unknown snapshot" -a nope e.qcow2
same_error "delete an unknown snapshot" -d nope e.qcow2
same_error "mixed actions" -l -c x e.qcow2
same_error "no file" -l
same_error "two files" -l e.qcow2 e.qcow2
same_error "missing argument" -c
same_error "unknown option" -x e.qcow2
same_error "missing file" -c s missing.qcow2
same_error "create on raw" -c s r.raw
same_error "apply on raw" -a s r.raw
same_error "delete on raw" -d s r.raw
same_error "list raw" -l r.raw
same_error "refcount_bits=1" -c s r1.qcow2
same_error "external data file" -c s df.qcow2
same_error "-U with create" -U -c s e.qcow2
same_error "no action" e.qcow2
# qemu-img leaks the L1 copy it allocated before failing; luna-img checks for room first.
qemu-img create -q -f qcow2 -o refcount_bits=1 r1.qcow2 1M
qemu-io -c 'write 0 64k' r1.qcow2 >/dev/null
"$LUNA_IMG" snapshot -c s r1.qcow2 2>/dev/null && fail "a snapshot of a refcount_bits=1 image was created"
clean "after a refused create" r1.qcow2
pass "a refused create (refcount_bits=1) leaves the image clean, with no leak"

# Reading a snapshot: convert -l and measure -l, as qemu-img (the virtual size stays the image's).
rm -f v.qcow2
qemu-img create -q -f qcow2 v.qcow2 4M
qemu-io -c 'write -P 1 0 1M' -c 'write -z 2M 64k' v.qcow2 >/dev/null
"$LUNA_IMG" snapshot -c one v.qcow2
qemu-io -c 'write -P 2 0 2M' v.qcow2 >/dev/null
"$LUNA_IMG" resize -q v.qcow2 8M
for param in one 1 snapshot.id=1 snapshot.name=one snapshot.id=1,snapshot.name=one; do
  rm -f l.raw q.raw
  "$LUNA_IMG" convert -l "$param" -O raw v.qcow2 l.raw
  qemu-img convert -l "$param" -O raw v.qcow2 q.raw
  cmp -s l.raw q.raw || fail "convert -l $param reads differently from qemu-img"
  diff <("$LUNA_IMG" measure -l "$param" -O qcow2 v.qcow2) <(qemu-img measure -l "$param" -O qcow2 v.qcow2) >/dev/null ||
    fail "measure -l $param differs: $("$LUNA_IMG" measure -l "$param" -O qcow2 v.qcow2)"
done
"$LUNA_IMG" convert -l one -O qcow2 v.qcow2 l.qcow2
qemu-img compare -q l.raw l.qcow2 || fail "convert -l to qcow2 reads differently"
pass "convert -l and measure -l read the snapshot as qemu-img (5 ways of naming it)"
same_convert_error() {
  local label=$1; shift
  local qs=0 ls=0
  rm -f o.raw
  qemu-img "$@" >q.out 2>q.err || qs=$?
  rm -f o.raw
  "$LUNA_IMG" "$@" >l.out 2>l.err || ls=$?
  [ "$qs" = "$ls" ] || fail "$label: exit $ls, qemu-img $qs"
  diff <(as_luna q.err) l.err >/dev/null || fail "$label: messages differ: $(diff <(as_luna q.err) l.err)"
  pass "$label: exit $ls $(head -n 1 l.err)"
}
same_convert_error "convert -l unknown" convert -l nope -O raw v.qcow2 o.raw
same_convert_error "convert -l id and name disagree" convert -l snapshot.id=2,snapshot.name=one -O raw v.qcow2 o.raw
same_convert_error "convert -l bad parameter" convert -l snapshot.bogus=1 -O raw v.qcow2 o.raw
same_convert_error "convert -l on raw" convert -f raw -l one -O raw r.raw o.raw
same_convert_error "convert -l with two inputs" convert -l one -O raw v.qcow2 v.qcow2 o.raw
same_convert_error "measure -l unknown" measure -l nope -O qcow2 v.qcow2
same_convert_error "measure -l on raw" measure -f raw -l one -O qcow2 r.raw
