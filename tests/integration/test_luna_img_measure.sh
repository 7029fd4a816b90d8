#!/usr/bin/env bash
# luna-img measure against qemu-img measure: the same numbers ("required size", "fully allocated
# size", "bitmaps size"), in human and JSON form, for a matrix of sizes and sources (raw with
# holes, qcow2 with data, zero and compressed clusters, extended L2, preallocated metadata, a
# backing chain, bitmaps) crossed with output options (-O raw/qcow2, cluster sizes, refcount
# widths, extended L2, preallocation, compat 0.10, a backing file), and the same errors.
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img qemu-io jq
cd "$WORK"

as_luna() { sed -e 's/^qemu-img: /luna-img: /' -e "s/Try 'qemu-img /Try 'luna-img /" "$1"; }

# same ARGS...: measure ARGS by both tools: same exit code, stdout and messages.
same() {
  local qs=0 ls=0
  qemu-img measure "$@" >q.out 2>q.err || qs=$?
  "$LUNA_IMG" measure "$@" >l.out 2>l.err || ls=$?
  [ "$ls" = "$qs" ] || { cat l.out l.err; fail "measure $* exited $ls, qemu-img $qs ($(cat q.err))"; }
  cmp -s q.out l.out || fail "measure $* differs: $(diff q.out l.out)"
  diff <(as_luna q.err) l.err >/dev/null || fail "measure $* messages differ: $(diff <(as_luna q.err) l.err)"
}

# ---- sources ---------------------------------------------------------------------------------
truncate -s 9M sparse.raw
qemu-io -f raw -c 'write -P 1 0 100k' -c 'write -P 2 1M 64k' -c 'write -P 3 5M 4k' sparse.raw >/dev/null
truncate -s 1000 odd.raw
qemu-img create -q -f qcow2 data.qcow2 10M
qemu-io -c 'write -P 1 0 100k' -c 'write -z 1M 128k' -c 'write -P 2 2M 64k' -c 'write -P 3 7M 1500k' \
  data.qcow2 >/dev/null
qemu-img convert -c -O qcow2 data.qcow2 compressed.qcow2
qemu-img create -q -f qcow2 -o extended_l2=on ext.qcow2 4M
qemu-io -c 'write -P 1 4k 4k' -c 'write -P 2 100k 8k' -c 'write -z 1M 64k' ext.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o preallocation=metadata prealloc.qcow2 3M
qemu-io -c 'write -P 1 64k 4k' prealloc.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 5M
qemu-io -c 'write -P 1 1M 1M' v2.qcow2 >/dev/null
truncate -s 1M base.raw
qemu-io -f raw -c 'write -P 5 0 64k' base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 2M
qemu-io -c 'write -P 6 128k 64k' mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 3M
qemu-io -c 'write -P 7 0 4k' -c 'write -z 1536k 64k' -c 'write -P 8 2600k 10k' top.qcow2 >/dev/null
cp data.qcow2 bitmaps.qcow2
qemu-img bitmap --add bitmaps.qcow2 first
qemu-img bitmap --add -g 4096 bitmaps.qcow2 a_second_bitmap_with_a_longer_name
qemu-img bitmap --add -g 2M bitmaps.qcow2 third

sources=(sparse.raw odd.raw data.qcow2 compressed.qcow2 ext.qcow2 prealloc.qcow2 v2.qcow2 top.qcow2 mid.qcow2
  bitmaps.qcow2 "-f raw data.qcow2" "--size 0" "--size 1000" "--size 1M" "--size 1G" "--size 100G" "--size 3T"
  "--size 1.5G")
options=("" "-o cluster_size=512" "-o cluster_size=4k" "-o cluster_size=2M" "-o refcount_bits=1"
  "-o refcount_bits=64,cluster_size=4k" "-o refcount_bits=8" "-o extended_l2=on" "-o extended_l2=on,cluster_size=2M"
  "-o preallocation=metadata" "-o preallocation=falloc" "-o preallocation=full" "-o compat=0.10"
  "-o backing_file=base.raw" "-o lazy_refcounts=on" "-o cluster_size=16k,extended_l2=on,preallocation=full"
  "-o cluster_size=2M,extended_l2=on,refcount_bits=1")
cases=0
for source in "${sources[@]}"; do
  # shellcheck disable=SC2086
  same -O raw $source
  # shellcheck disable=SC2086
  same --output=json $source
  for option in "${options[@]}"; do
    # shellcheck disable=SC2086
    same -O qcow2 $option $source
    # shellcheck disable=SC2086
    same --output=json -O qcow2 $option $source
    cases=$((cases + 2))
  done
done
pass "$cases measurements equal to qemu-img's"

# The numbers mean something: data counts, zeroes and holes do not, bitmaps are listed.
"$LUNA_IMG" measure -O qcow2 --output=json data.qcow2 >l.json
required=$(jq .required l.json) full=$(jq '."fully-allocated"' l.json)
[ "$required" -gt $((3 * 65536 + 1700000)) ] && [ "$required" -lt "$full" ] ||
  fail "data.qcow2: required $required, fully allocated $full"
"$LUNA_IMG" measure -O qcow2 bitmaps.qcow2 | grep -q "^bitmaps size: [1-9]" ||
  fail "bitmaps.qcow2: no bitmaps size: $("$LUNA_IMG" measure -O qcow2 bitmaps.qcow2)"
pass "numbers are plausible"

# ---- errors ----------------------------------------------------------------------------------
same
same data.qcow2 top.qcow2
same --size 1G data.qcow2
same -f raw --size 1G
same -l snap --size 1G
same -O qcow2 -o cluster_size=3k --size 1G
same -O qcow2 -o cluster_size=4M --size 1G
same -O qcow2 -o cluster_size=abc --size 1G
same -O qcow2 -o foo=bar --size 1G
same -O qcow2 -o help --size 1G
same -O qcow2 -o refcount_bits=3 --size 1G
same -O qcow2 -o refcount_bits=x --size 1G
same -O qcow2 -o compat=0.10,refcount_bits=8 --size 1G
same -O qcow2 -o compat=2 --size 1G
same -O qcow2 -o lazy_refcounts=maybe --size 1G
same -O qcow2 -o preallocation=bad --size 1G
same -O qcow2 -o cluster_size=512 --size 10T
same -O qcow2 -o extended_l2=on,cluster_size=4k --size 1G
same -O raw -o cluster_size=1k data.qcow2
same -O vmdk --size 1G
same -O foo --size 1G
same -O qcow2 --size -5
same -O qcow2 --size 1x
same --output=xml --size 1M
same -O qcow2 nonexistent.qcow2
same -O qcow2 -f qcow2 sparse.raw
same -O qcow2 -l nosuchsnapshot data.qcow2
same -O qcow2 -l snapshot.name=nosuchsnapshot data.qcow2
same -O qcow2 -U data.qcow2
same -O qcow2 --image-opts driver=qcow2,file.filename=top.qcow2
# A bad option: getopt's message, the help, exit 0 (qemu-img's help text is its own).
for bad in "-x --size 1M" "--foo --size 1M" "-O"; do
  qs=0 ls=0
  # shellcheck disable=SC2086
  qemu-img measure $bad >/dev/null 2>q.err || qs=$?
  # shellcheck disable=SC2086
  "$LUNA_IMG" measure $bad >l.out 2>l.err || ls=$?
  [ "$qs" = "$ls" ] || fail "measure $bad exited $ls, qemu-img $qs"
  diff q.err l.err >/dev/null || fail "measure $bad messages differ: $(diff q.err l.err)"
  grep -q "usage: luna-img measure" l.out || fail "measure $bad: no help"
done
pass "errors and options as qemu-img"
