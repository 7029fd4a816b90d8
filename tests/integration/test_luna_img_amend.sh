#!/usr/bin/env bash
# luna-img amend against qemu-img amend on identical copies: compat up and down (round
# trips), lazy_refcounts on and off, size, -o help; the header fields qemu-img info
# --output=json shows agree, content is kept (qemu-img compare), qemu-img check is clean.
# Downgrading expands zero clusters (with and without a host cluster, over a backing file,
# inside internal snapshots) so they still read as zeroes; what v2 cannot express and the
# options amend cannot change get qemu-img's messages and exit codes.
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img qemu-io
cd "$WORK"

as_luna() { sed -e 's/^qemu-img: /luna-img: /' -e "s/Try 'qemu-img /Try 'luna-img /" "$1"; }
# The header as qemu-img reports it, without what depends on the host layout.
header() { qemu-img info --output=json "$1" | "$SYSTEM_PYTHON" -c '
import json, sys
info = json.load(sys.stdin)
for key in ("filename", "actual-size", "dirty-flag"):
    info.pop(key, None)
print(json.dumps(info, sort_keys=True))'; }

check_clean() { # check_clean LABEL IMAGE
  qemu-img check "$2" >check.out 2>&1 || { cat check.out; fail "$1: qemu-img check $2 failed"; }
  grep -q leaked check.out && { cat check.out; fail "$1: $2 leaks"; }
  return 0
}

# amend_both LABEL ARGS...: qemu-img amend on q.qcow2, luna-img amend on l.qcow2 (made
# identical by the caller); same exit code, output and messages; when both succeed, the
# same header, the same content and both clean.
amend_both() {
  local label=$1; shift
  local qs=0 ls=0
  qemu-img amend "$@" q.qcow2 >q.out 2>q.err || qs=$?
  "$LUNA_IMG" amend "$@" l.qcow2 >l.out 2>l.err || ls=$?
  [ "$qs" = "$ls" ] || fail "$label: luna-img exited $ls, qemu-img $qs ($(cat l.err))"
  cmp -s q.out l.out || fail "$label: output differs: $(cat l.out) / $(cat q.out)"
  diff <(as_luna q.err | sed "s#q\.qcow2#l.qcow2#g") l.err >/dev/null ||
    fail "$label: messages differ: $(diff <(as_luna q.err) l.err)"
  [ "$ls" != 0 ] && return 0
  [ "$(header q.qcow2)" = "$(header l.qcow2)" ] ||
    fail "$label: headers differ: $(diff <(header q.qcow2) <(header l.qcow2))"
  check_clean "$label" l.qcow2
  qemu-img compare -q q.qcow2 l.qcow2 || fail "$label: the images read differently"
}

fresh() { # fresh CREATE-OPTIONS [SIZE]: data, zero clusters and unallocated ranges, copied for both
  rm -f q.qcow2 l.qcow2
  qemu-img create -q -f qcow2 -o "$1" q.qcow2 "${2:-4M}"
  qemu-io -f qcow2 -c 'write -P 1 0 100k' q.qcow2 >/dev/null
  if qemu-img info q.qcow2 | grep -q 'compat: 1.1'; then
    qemu-io -f qcow2 -c 'write -z 32k 16k' -c 'write -z 1M 64k' -c 'write -z -u 2M 64k' q.qcow2 >/dev/null
  fi
  cp q.qcow2 l.qcow2
}

# ---- -o help and the messages for what amend does not take ----
fresh compat=1.1
amend_both "help" -o help
grep -q "lazy_refcounts=<bool (on/off)>" l.out || fail "-o help lists no lazy_refcounts"
for options in compat=2.0 lazy_refcounts=maybe cluster_size=4096 foo=1 foo=1,cluster_size=1k \
  size=abc size=1000 refcount_bits=7 encrypt.new-secret=x backing_file=other data_file=other \
  data_file_raw=on extended_l2=on "" "compat=1.1,"; do
  amend_both "error -o '$options'" -o "$options"
  [ -s l.err ] || fail "-o '$options' gave no message"
  cmp -s q.qcow2 l.qcow2 || fail "-o '$options': the refused amend changed the image"
done
amend_both "no -o"
amend_both "raw" -f raw -o compat=0.10
amend_both "bad cache mode" -t bogus -o compat=0.10
amend_both "unchanged refcount width" -o refcount_bits=16
pass "amend -o help and errors match qemu-img"

# ---- compat: downgrade, upgrade, round trips ----
for cluster in 512 4096 65536; do
  fresh "compat=1.1,cluster_size=$cluster"
  cp q.qcow2 original.qcow2
  amend_both "v3->v2 ($cluster)" -o compat=0.10
  qemu-img info l.qcow2 | grep -q 'compat: 0.10' || fail "v3->v2 ($cluster): still v3"
  qemu-img compare -q original.qcow2 l.qcow2 || fail "v3->v2 ($cluster): content changed"
  amend_both "v2->v3 ($cluster)" -o compat=v3
  qemu-img info l.qcow2 | grep -q 'compat: 1.1' || fail "v2->v3 ($cluster): still v2"
  amend_both "v3->v2 again ($cluster)" -o compat=v2
  qemu-img compare -q original.qcow2 l.qcow2 || fail "round trip ($cluster): content changed"
done
amend_both "v2 -> v2" -o compat=0.10
amend_both "progress" -p -o compat=1.1
pass "compat up- and downgrades match qemu-img amend (512, 4k, 64k clusters)"

# ---- zero clusters over a backing file and in snapshots read as zeroes after a downgrade ----
rm -f base.raw
qemu-img create -q -f raw base.raw 4M
qemu-io -f raw -c 'write -P 0xaa 0 4M' base.raw >/dev/null
rm -f q.qcow2 l.qcow2
qemu-img create -q -f qcow2 -o compat=1.1,cluster_size=4096 -b base.raw -F raw q.qcow2 4M
qemu-io -f qcow2 -c 'write -P 0x11 0 64k' -c 'write -z 16k 8k' -c 'write -z 1M 64k' \
  -c 'write -z -u 2M 64k' q.qcow2 >/dev/null
qemu-img snapshot -c first q.qcow2
qemu-io -f qcow2 -c 'write -z 3M 16k' -c 'write -P 0x22 3M 4k' q.qcow2 >/dev/null
cp q.qcow2 l.qcow2
cp q.qcow2 original.qcow2
amend_both "downgrade over a backing file, with a snapshot" -o compat=0.10
qemu-img compare -q original.qcow2 l.qcow2 || fail "downgrade: content changed"
for range in "16k 8k" "1M 64k" "2M 64k" "3149824 12k"; do
  # shellcheck disable=SC2086
  qemu-io -f qcow2 -c "read -P 0 $range" l.qcow2 | grep -q Pattern && fail "downgrade: $range not zero"
  qemu-io -f qcow2 -c "read -P 0 $range" l.qcow2 | grep -q 'read ' || fail "downgrade: cannot read $range"
done
qemu-io -f qcow2 -c 'read -P 0xaa 4k 4k' l.qcow2 | grep -q Pattern && fail "downgrade: backing data lost"
cmp -s <(qemu-img map --output=json q.qcow2) <(qemu-img map --output=json l.qcow2) ||
  fail "downgrade: allocation differs from qemu-img's"
qemu-img snapshot -a first q.qcow2
qemu-img snapshot -a first l.qcow2
check_clean "snapshot applied" l.qcow2
qemu-img compare -q q.qcow2 l.qcow2 || fail "downgrade: the snapshot reads differently"
qemu-io -f qcow2 -c 'read -P 0 1M 64k' l.qcow2 | grep -q Pattern && fail "downgrade: snapshot zeroes lost"
pass "downgrade keeps zero clusters as zeroes (backing file, snapshots)"

# ---- what v2 cannot express ----
fresh compat=1.1,refcount_bits=8
amend_both "downgrade 8-bit refcounts" -o compat=0.10
fresh compat=1.1,extended_l2=on
amend_both "downgrade extended L2" -o compat=0.10
fresh compat=1.1,compression_type=zstd
amend_both "downgrade zstd" -o compat=0.10
rm -f q.qcow2 l.qcow2 q.data l.data
qemu-img create -q -f qcow2 -o data_file=q.data q.qcow2 1M
qemu-img create -q -f qcow2 -o data_file=l.data l.qcow2 1M
amend_both "downgrade with a data file" -o compat=0.10
# A snapshot of another size than the image's: refused, unless size= brings the image back to it.
fresh compat=1.1
qemu-img snapshot -c small q.qcow2
qemu-img resize -q q.qcow2 8M
cp q.qcow2 l.qcow2
amend_both "downgrade with a snapshot of another size" -o compat=0.10
grep -q "Internal snapshots prevent downgrade" l.err || fail "snapshot size: no message"
amend_both "downgrade back to the snapshot's size" -o compat=0.10,size=4M
qemu-img info l.qcow2 | grep -q 'compat: 0.10' || fail "snapshot size: size=4M did not allow the downgrade"
pass "downgrades v2 cannot express are refused as qemu-img refuses them"

# ---- lazy_refcounts ----
fresh compat=1.1
amend_both "lazy on" -o lazy_refcounts=on
grep -q '"lazy-refcounts": true' <(qemu-img info --output=json l.qcow2) || fail "lazy_refcounts not on"
amend_both "lazy off" -o lazy_refcounts=off
grep -q '"lazy-refcounts": false' <(qemu-img info --output=json l.qcow2) || fail "lazy_refcounts not off"
fresh compat=0.10
amend_both "lazy on v2" -o lazy_refcounts=on
amend_both "lazy on with upgrade" -o compat=1.1,lazy_refcounts=on
amend_both "downgrade drops lazy" -o compat=0.10
# A dirty image (lazy refcounts, the writer died) is repaired before the bit goes.
fresh compat=1.1,lazy_refcounts=on
(qemu-io -f qcow2 -c 'write -P 3 512k 256k' -c abort q.qcow2 >/dev/null 2>&1 || true) 2>/dev/null
qemu-img info --output=json q.qcow2 | grep -q '"dirty-flag": true' || fail "qemu-io abort left no dirty image"
cp q.qcow2 l.qcow2
# qemu-img prints its open-time repair (check's lines) on stderr; luna-img repairs without them.
qemu-img amend -o lazy_refcounts=off q.qcow2 2>/dev/null || fail "qemu-img amend of the dirty image failed"
"$LUNA_IMG" amend -o lazy_refcounts=off l.qcow2 || fail "luna-img amend of the dirty image failed"
qemu-img check -q l.qcow2 || fail "the amended dirty image is not clean"
qemu-img info --output=json l.qcow2 | grep -q '"dirty-flag": false' || fail "amended image still dirty"
qemu-io -f qcow2 -c 'read -P 3 512k 256k' l.qcow2 | grep -q Pattern && fail "dirty image lost its data"
pass "lazy_refcounts on/off as qemu-img amend (dirty image repaired)"

# ---- size through amend ----
fresh compat=1.1
amend_both "size grow" -o size=64M
amend_both "size shrink" -o size=1M
[ "$(qemu-img info --output=json l.qcow2 | grep -c '"virtual-size": 1048576')" = 1 ] || fail "size=1M not applied"
pass "amend -o size as qemu-img amend"

# ---- progress ----
fresh compat=0.10
amend_both "progress, upgrade" -p -o compat=1.1
amend_both "progress, downgrade" -p -o compat=0.10
amend_both "progress, quiet" -p -q -o compat=1.1
pass "-p prints qemu-img's progress steps (-q silences them)"

# ---- refcount_bits: new refcount structures; a snapshot's shared clusters keep their counts ----
with_snapshot() { # with_snapshot CREATE-OPTIONS: a cluster shared by a snapshot has refcount 2
  fresh "$1" 4M
  qemu-img snapshot -c shared q.qcow2
  qemu-io -f qcow2 -c 'write -P 8 0 4k' q.qcow2 >/dev/null
  cp q.qcow2 l.qcow2
}
for cluster in 512 65536; do
  for bits in 2 8 64 16; do
    with_snapshot "compat=1.1,cluster_size=$cluster"
    amend_both "refcount_bits=$bits ($cluster)" -o refcount_bits=$bits
    qemu-img info l.qcow2 | grep -q "refcount bits: $bits" || fail "refcount_bits=$bits ($cluster) not applied"
    amend_both "refcount_bits back to 16 ($cluster)" -o refcount_bits=16
    qemu-img snapshot -a shared q.qcow2
    qemu-img snapshot -a shared l.qcow2
    check_clean "snapshot after refcount_bits=$bits" l.qcow2
    qemu-img compare -q q.qcow2 l.qcow2 || fail "refcount_bits=$bits ($cluster): the snapshot reads differently"
  done
done
with_snapshot compat=1.1
amend_both "refcount_bits=1 with a shared cluster" -o refcount_bits=1
grep -q "Cannot decrease refcount entry width to 1 bits" l.err || fail "refcount_bits=1: no message"
fresh compat=1.1,refcount_bits=8
amend_both "refcount_bits=16 and downgrade" -o refcount_bits=16,compat=0.10
fresh compat=0.10
amend_both "refcount_bits=8 with upgrade" -o refcount_bits=8,compat=1.1
amend_both "refcount_bits=4 and growth" -o refcount_bits=4,size=64M
amend_both "refcount_bits=8 on v2" -o refcount_bits=8,compat=0.10
pass "refcount_bits changes as qemu-img amend makes them (512 and 64k clusters, snapshots)"
