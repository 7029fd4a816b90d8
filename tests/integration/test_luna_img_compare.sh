#!/usr/bin/env bash
# luna-img compare against qemu-img compare: identical images of different formats and layouts,
# a difference at a known offset (in data, and where only one image has data), images of
# different sizes with a zero and a non-zero tail, strict mode (-s: size and block status),
# -q, -p (same progress bytes), option and open errors: same stdout, same messages, same exit
# code (0 identical, 1 different, 2 open error).  Sparse 10 GiB images compare in seconds.
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img qemu-io
cd "$WORK"

as_luna() { sed -e 's/^qemu-img: /luna-img: /' -e "s/Try 'qemu-img /Try 'luna-img /" "$1"; }

# same LABEL EXPECTED_STATUS ARGS...: compare ARGS by both tools: the expected exit code, same output.
same() {
  local label=$1 expected=$2; shift 2
  local qs=0 ls=0
  qemu-img compare "$@" >q.out 2>q.err || qs=$?
  "$LUNA_IMG" compare "$@" >l.out 2>l.err || ls=$?
  [ "$qs" = "$expected" ] ||
    { cat q.out q.err; fail "$label: qemu-img compare $* exited $qs, the test expects $expected"; }
  [ "$ls" = "$qs" ] || { cat l.out l.err; fail "$label: luna-img compare $* exited $ls, qemu-img $qs"; }
  cmp -s q.out l.out || fail "$label: compare $* prints differently: $(diff <(od -c q.out) <(od -c l.out) | head)"
  diff <(as_luna q.err) l.err >/dev/null || fail "$label: compare $* messages differ: $(diff <(as_luna q.err) l.err)"
  pass "$label: $(head -c 200 l.out | tr '\r\n' '  ')(exit $ls)"
}

# An image with data, zero clusters and holes, and copies of it in other layouts.
qemu-img create -q -f qcow2 a.qcow2 10M
qemu-io -c 'write -P 1 0 100k' -c 'write -z 1M 128k' -c 'write -P 2 2M 64k' -c 'write -P 3 9M 1M' a.qcow2 >/dev/null
qemu-img convert -O raw a.qcow2 a.raw
qemu-img convert -O qcow2 -o cluster_size=512 a.qcow2 a512.qcow2
qemu-img convert -c -O qcow2 a.qcow2 compressed.qcow2
qemu-img convert -O raw -S 0 a.qcow2 full.raw

same "qcow2 vs raw" 0 a.qcow2 a.raw
same "raw vs qcow2" 0 a.raw a.qcow2
same "qcow2 vs 512-byte clusters" 0 a.qcow2 a512.qcow2
same "compressed vs raw" 0 compressed.qcow2 a.raw
same "sparse vs fully allocated raw" 0 a.raw full.raw
same "same image" 0 a.qcow2 a.qcow2
same "formats given" 0 -f qcow2 -F raw a.qcow2 a.raw
same "cache mode" 0 -T none a.qcow2 a.raw
same "force share" 0 -U a.qcow2 a.raw
same "strict, same image" 0 -s a.qcow2 a.qcow2
same "strict, same layout" 0 -s a.raw a.raw

# A byte changed at 70000: reported at the start of its sector, 69632.
cp a.raw b.raw
printf 'x' | dd of=b.raw bs=1 seek=70000 conv=notrunc status=none
same "differs in data" 1 a.qcow2 b.raw
grep -qx "Content mismatch at offset 69632!" l.out || fail "differs in data: wrong offset: $(cat l.out)"
same "differs in data, quiet" 1 -q a.qcow2 b.raw
[ ! -s l.out ] || fail "-q printed: $(cat l.out)"
# A byte where only one image has data (the other a hole).
cp a.raw c.raw
printf 'y' | dd of=c.raw bs=1 seek=5000000 conv=notrunc status=none
same "differs where the other has a hole" 1 a.qcow2 c.raw
grep -qx "Content mismatch at offset 4999680!" l.out || fail "differs over a hole: wrong offset: $(cat l.out)"
same "differs, other order" 1 c.raw a.qcow2
# A zero cluster against data.
qemu-img create -q -f qcow2 z.qcow2 10M
qemu-io -c 'write -P 1 0 100k' -c 'write -P 9 1M 128k' -c 'write -P 2 2M 64k' -c 'write -P 3 9M 1M' z.qcow2 >/dev/null
same "zero cluster vs data" 1 a.qcow2 z.qcow2

# Sizes differ: a zero tail is a warning, a non-zero one a mismatch, -s refuses either.
cp a.raw longer.raw
truncate -s 12M longer.raw
same "larger with a zero tail" 0 a.raw longer.raw
grep -q "Warning: Image size mismatch!" l.out || fail "size mismatch: no warning: $(cat l.out)"
same "larger first" 0 longer.raw a.qcow2
same "strict, sizes differ" 1 -s a.raw longer.raw
printf 'z' | dd of=longer.raw bs=1 seek=11000000 conv=notrunc status=none
same "larger with data in the tail" 1 longer.raw a.qcow2
grep -qx "Content mismatch at offset 10999808!" l.out || fail "tail: wrong offset: $(cat l.out)"
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 grown.qcow2 14M
same "overlay larger than its backing file" 0 grown.qcow2 a.raw
qemu-io -c 'write -P 4 13M 4k' grown.qcow2 >/dev/null
same "overlay with data past the backing file" 1 a.raw grown.qcow2

# Strict mode compares block status too.
same "strict, qcow2 vs raw" 1 -s a.qcow2 a.raw
same "strict, sparse vs full raw" 1 -s a.raw full.raw
same "strict, compressed vs raw" 1 -s compressed.qcow2 a.raw

# A backing chain against its flattened copy.
truncate -s 1M base.raw
qemu-io -f raw -c 'write -P 5 0 64k' base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 2M
qemu-io -c 'write -P 6 128k 64k' mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 3M
qemu-io -c 'write -P 7 0 4k' -c 'write -z 1536k 64k' top.qcow2 >/dev/null
qemu-img convert -O raw top.qcow2 top.raw
same "chain vs flattened" 0 top.qcow2 top.raw
same "chain vs its backing file" 1 top.qcow2 mid.qcow2
same "strict, chain vs itself" 0 -s top.qcow2 top.qcow2

# Progress: the same bytes as qemu-img.
same "progress, identical" 0 -p a.raw a.qcow2
same "progress, chain" 0 -p top.raw top.qcow2
same "progress, mismatch" 1 -p c.raw a.raw
same "progress and quiet" 0 -p -q a.raw a.qcow2

# Errors.
same "missing file" 2 nonexistent a.raw
same "missing second file" 2 a.raw nonexistent
same "not qcow2" 2 -f qcow2 a.raw a.raw
same "bad cache" 2 -T foo a.raw a.raw
same "one file name" 1 a.raw
same "three file names" 1 a.raw a.raw a.raw
same "unknown option" 1 -x a.raw a.raw

# Sparse 10 GiB images: block status skips what both read as zeroes.
qemu-img create -q -f qcow2 big.qcow2 10G
qemu-io -c 'write -P 1 5G 1M' -c 'write -P 2 9G 64k' big.qcow2 >/dev/null
truncate -s 10G big.raw
qemu-io -f raw -c 'write -P 1 5G 1M' -c 'write -P 2 9G 64k' big.raw >/dev/null
start=$(date +%s)
same "10 GiB sparse, qcow2 vs raw" 0 big.qcow2 big.raw
qemu-io -f raw -c 'write -P 3 9G 512' big.raw >/dev/null
same "10 GiB sparse, a difference" 1 big.qcow2 big.raw
grep -qx "Content mismatch at offset 9663676416!" l.out || fail "10 GiB: wrong offset: $(cat l.out)"
elapsed=$(($(date +%s) - start))
[ "$elapsed" -lt 20 ] || fail "comparing sparse 10 GiB images took ${elapsed}s"
pass "sparse 10 GiB images compared in ${elapsed}s"
