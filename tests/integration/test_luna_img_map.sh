#!/usr/bin/env bash
# luna-img map against qemu-img map: on raw files with holes, qcow2 images with data, zero and
# compressed clusters, preallocated metadata, extended L2 with partly written clusters, 512-byte
# and 2 MiB clusters and a three-deep backing chain over a shorter raw base, both tools must print
# the same JSON (compared with jq and byte for byte) and the same human table, with and without
# --start-offset/--max-length, and fail alike (same message, same exit code).
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img qemu-io jq
cd "$WORK"

# qemu-img's messages with luna-img's name.
as_luna() { sed -e 's/^qemu-img: /luna-img: /' -e "s/Try 'qemu-img /Try 'luna-img /" "$1"; }

# same_map LABEL ARGS...: map ARGS by both tools: same exit code, stdout and stderr.
same_map() {
  local label=$1; shift
  local qs=0 ls=0
  qemu-img map "$@" >q.out 2>q.err || qs=$?
  "$LUNA_IMG" map "$@" >l.out 2>l.err || ls=$?
  [ "$qs" = "$ls" ] || { cat l.err; fail "$label: map $* exited $ls, qemu-img $qs"; }
  diff q.out l.out >/dev/null || fail "$label: map $* prints differently: $(diff q.out l.out | head -20)"
  diff <(as_luna q.err) l.err >/dev/null || fail "$label: map $* messages differ: $(diff <(as_luna q.err) l.err)"
}

# check_image LABEL FILE [ARGS...]: JSON (jq and byte for byte) and human output agree.
check_image() {
  local label=$1 file=$2; shift 2
  qemu-img map --output=json "$@" "$file" >q.json
  "$LUNA_IMG" map --output=json "$@" "$file" >l.json || fail "$label: luna-img map --output=json failed"
  diff <(jq -c '.[]' q.json) <(jq -c '.[]' l.json) >/dev/null ||
    fail "$label: JSON map differs: $(diff <(jq -c '.[]' q.json) <(jq -c '.[]' l.json) | head -20)"
  same_map "$label (json)" --output=json "$@" "$file"
  same_map "$label (human)" "$@" "$file"
  pass "$label"
}

# ---- raw ------------------------------------------------------------------------------------
truncate -s 8M sparse.raw
qemu-io -f raw -c 'write -P 1 0 100k' -c 'write -P 2 1M 64k' -c 'write -P 3 5M 4k' -c 'write -z 6M 64k' \
  sparse.raw >/dev/null
check_image "raw with holes" sparse.raw
[ "$(jq length l.json)" -ge 5 ] || fail "raw with holes: expected several extents, got $(cat l.json)"
jq -e '.[0].data and .[0].offset == 0 and (.[1].zero) and (.[1].data | not)' l.json >/dev/null ||
  fail "raw with holes: first extents wrong: $(cat l.json)"
check_image "raw, -f raw" sparse.raw -f raw
truncate -s 1M empty.raw
check_image "raw, all hole" empty.raw

# ---- qcow2 ----------------------------------------------------------------------------------
qemu-img create -q -f qcow2 data.qcow2 16M
qemu-io -c 'write -P 1 0 100k' -c 'write -z 1M 128k' -c 'write -P 2 3M 64k' -c 'write -P 3 2M 64k' \
  -c 'write -P 4 8M 300k' -c 'discard 8M 64k' data.qcow2 >/dev/null
check_image "qcow2 data and zero clusters" data.qcow2
jq -e 'any(.[]; .present and .zero and (.data | not))' l.json >/dev/null ||
  fail "qcow2: no zero cluster reported: $(cat l.json)"
check_image "qcow2 as raw (-f raw)" data.qcow2 -f raw

qemu-img convert -c -O qcow2 data.qcow2 compressed.qcow2
check_image "compressed clusters" compressed.qcow2
grep -q "compressed clusters" l.err || fail "compressed: human map should refuse as qemu-img does"
qemu-img convert -c -O qcow2 -o compression_type=zstd data.qcow2 zstd.qcow2
check_image "zstd compressed clusters" zstd.qcow2

for cluster in 512 2M; do
  qemu-img create -q -f qcow2 -o cluster_size=$cluster c$cluster.qcow2 12M
  qemu-io -c 'write -P 1 0 3k' -c 'write -P 2 1000k 1500k' -c 'write -z 4M 2M' -c 'write -P 3 10M 512' \
    c$cluster.qcow2 >/dev/null
  check_image "cluster_size=$cluster" c$cluster.qcow2
done

qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k ext.qcow2 4M
qemu-io -c 'write -P 1 4k 4k' -c 'write -P 2 64k 8k' -c 'write -P 3 200k 2k' -c 'write -z 300k 4k' \
  -c 'write -P 4 1M 64k' -c 'write -z 1M 8k' -c 'write -P 5 2M 130k' ext.qcow2 >/dev/null
check_image "extended L2, partly written clusters" ext.qcow2
jq -e 'any(.[]; (.present | not) and .zero and has("offset"))' l.json >/dev/null ||
  fail "extended L2: unallocated subclusters of allocated clusters should keep their offset: $(cat l.json)"

qemu-img create -q -f qcow2 -o preallocation=metadata prealloc.qcow2 2M
qemu-io -c 'write -P 1 64k 4k' prealloc.qcow2 >/dev/null
check_image "preallocation=metadata" prealloc.qcow2
qemu-img create -q -f qcow2 -o preallocation=falloc falloc.qcow2 2M
check_image "preallocation=falloc" falloc.qcow2

# ---- backing chain of depth 3 over a shorter raw base ----------------------------------------
truncate -s 1M base.raw
qemu-io -f raw -c 'write -P 5 0 64k' -c 'write -P 5 512k 4k' base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 2M
qemu-io -c 'write -P 6 128k 64k' -c 'write -z 768k 64k' mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 3M
qemu-io -c 'write -P 7 0 4k' -c 'write -z 1536k 64k' -c 'write -P 8 2560k 64k' top.qcow2 >/dev/null
check_image "backing chain, depth 3" top.qcow2
jq -e 'any(.[]; .depth == 2) and any(.[]; .depth == 1) and any(.[]; .depth == 0)' l.json >/dev/null ||
  fail "chain: every depth should appear: $(cat l.json)"
check_image "backing chain, middle" mid.qcow2
mkdir -p sub
cp base.raw mid.qcow2 top.qcow2 sub/
(cd "$WORK" && check_image "backing chain in a subdirectory" sub/top.qcow2)
grep -q "sub/base.raw" l.out || fail "chain: the base's file should be named as qemu-img names it: $(cat l.out)"

# ---- ranges ----------------------------------------------------------------------------------
for range in "--start-offset=100000" "--max-length=1000000" "--start-offset=100000 --max-length=1000000" \
  "--start-offset=1M --max-length=1" "--start-offset=3000000 --max-length=5M" "--max-length=0" \
  "--start-offset=20M" "--start-offset=64k --max-length=64k" "--start-offset=1.5M"; do
  # shellcheck disable=SC2086
  check_image "range $range (chain)" top.qcow2 $range
  # shellcheck disable=SC2086
  check_image "range $range (qcow2)" data.qcow2 $range
done

# ---- errors ----------------------------------------------------------------------------------
same_map "missing file" nonexistent.qcow2
same_map "no file name"
same_map "two file names" data.qcow2 top.qcow2
same_map "not qcow2" -f qcow2 sparse.raw
same_map "unknown format" -f foo data.qcow2
same_map "bad output" --output=xml data.qcow2
same_map "negative start" --start-offset=-1 data.qcow2
same_map "bad start" --start-offset=1x data.qcow2
same_map "bad length" --max-length=-3 data.qcow2
same_map "huge start" --start-offset=99999999999999999999 data.qcow2
same_map "unknown option" -x data.qcow2
same_map "image-opts" --image-opts driver=qcow2,file.filename=top.qcow2
same_map "image-opts, json" --output=json --image-opts driver=qcow2,file.filename=data.qcow2
same_map "force share" -U --output=json data.qcow2
pass "errors and options as qemu-img"
