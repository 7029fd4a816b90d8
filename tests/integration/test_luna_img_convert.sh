#!/usr/bin/env bash
# luna-img convert against qemu-img: for raw and qcow2 sources (holes, zero
# clusters, backing chains, compressed clusters) and outputs (64k and 512 B
# clusters, compat 0.10, -c, -B, -n, -S, -m, -W), `qemu-img compare` finds
# source and output identical and `qemu-img check` finds qcow2 outputs clean;
# allocation follows the sparse rules; progress and error cases match
# qemu-img's output and exit codes.
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img qemu-io
cd "$WORK"

# convert LABEL SOURCE OUTPUT [luna-img convert flags...]: convert, compare, check.
convert() {
  local label=$1 source=$2 output=$3
  shift 3
  "$LUNA_IMG" convert "$@" "$source" "$output" || fail "$label: luna-img convert failed"
  qemu-img compare -q "$source" "$output" || fail "$label: output differs from the source"
  if [ "$(qemu-img info --output=json "$output" | jq -r .format)" = qcow2 ]; then
    qemu-img check -q "$output" || fail "$label: qemu-img check found problems"
  fi
}

allocated() { qemu-img map --output=json "$1" | jq '[.[] | select(.data) | .length] | add // 0'; }

# Sources: 64 MiB with random data, holes, zeroes written as data, an odd tail.
qemu-img create -q -f raw holes.raw 64M
qemu-io -f raw -c 'write -P 0x11 0 1M' -c 'write -P 0x22 5M 3M' -c 'write -P 0 10M 2M' \
  -c 'write -P 0x33 20M 4k' -c 'write -P 0x44 63M 1M' holes.raw >/dev/null
head -c 3M /dev/urandom | dd of=holes.raw bs=1M seek=30 conv=notrunc status=none
qemu-img create -q -f raw odd.raw 5000000
qemu-io -f raw -c 'write -P 0x55 4000000 999936' odd.raw >/dev/null
qemu-img convert -O qcow2 holes.raw holes.qcow2
qemu-io -f qcow2 -c 'write -z 5M 1M' -c 'write -z -u 30M 64k' -c 'discard 20M 64k' holes.qcow2 >/dev/null

convert raw-qcow2 holes.raw out1.qcow2 -O qcow2
convert raw-qcow2-c512 holes.raw out2.qcow2 -O qcow2 -o cluster_size=512
convert raw-qcow2-v2 holes.raw out3.qcow2 -O qcow2 -o compat=0.10
convert raw-qcow2-2m holes.raw out4.qcow2 -O qcow2 -o cluster_size=2M,lazy_refcounts=on
convert qcow2-raw holes.qcow2 out5.raw
convert qcow2-qcow2 holes.qcow2 out6.qcow2 -O qcow2
convert qcow2-qcow2-c512-v2 holes.qcow2 out7.qcow2 -O qcow2 -o cluster_size=512,compat=0.10
convert qcow2-c512-qcow2 out7.qcow2 out8.qcow2 -f qcow2 -O qcow2 -o cluster_size=64k
convert raw-raw holes.raw out9.raw -f raw -O raw
convert odd-qcow2 odd.raw out10.qcow2 -O qcow2
convert odd-raw odd.raw out11.raw
convert prealloc holes.raw out12.qcow2 -O qcow2 -o preallocation=metadata
pass "raw and qcow2 conversions (64k, 512 B and 2M clusters, compat 0.10, holes, zero clusters)"

# Zero clusters stay unallocated in the output.
[ "$(allocated out6.qcow2)" -lt "$(allocated holes.raw)" ] || fail "zero clusters were written as data"

# Backing chain: the output holds the full content.
qemu-img create -q -f qcow2 -o cluster_size=512 base.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x61 0 8M' -c 'write -P 0x62 40M 1M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
qemu-io -f qcow2 -c 'write -P 0x63 4M 8M' -c 'write -z 40M 64k' mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c 'write -P 0x64 6M 64k' -c 'write -P 0x65 50M 1M' top.qcow2 >/dev/null
convert chain-qcow2 top.qcow2 out20.qcow2 -O qcow2
convert chain-raw top.qcow2 out21.raw
[ "$(qemu-img info --output=json out20.qcow2 | jq -r '.["backing-filename"] // "none"')" = none ] ||
  fail "chain: the output has a backing file"
pass "a backing chain converts to a standalone image"

# Compressed sources made by qemu-img convert -c (zlib and zstd).
for type in zlib zstd; do
  qemu-img convert -c -O qcow2 -o compression_type=$type holes.raw comp-$type.qcow2
  convert compressed-$type-raw comp-$type.qcow2 out-c-$type.raw
  convert compressed-$type-qcow2 comp-$type.qcow2 out-c-$type.qcow2 -O qcow2
done
pass "compressed sources (zlib, zstd)"

# -c: compressed output, read back by qemu-img.
for type in zlib zstd; do
  convert compress-$type holes.raw out-cc-$type.qcow2 -O qcow2 -c -o compression_type=$type
  qemu-img check out-cc-$type.qcow2 | grep -q 'compressed clusters' || fail "-c $type: nothing compressed"
  [ "$(qemu-img check --output=json out-cc-$type.qcow2 | jq '.["compressed-clusters"]')" -gt 0 ] ||
    fail "-c $type: no compressed clusters"
done
convert compress-c512 holes.raw out-cc-512.qcow2 -O qcow2 -c -o cluster_size=512
pass "-c writes compressed clusters qemu-img reads"

# -B: an overlay holding only what differs from the backing file.
qemu-img convert -O qcow2 base.qcow2 golden.qcow2
qemu-img convert top.qcow2 changed.raw
"$LUNA_IMG" convert -O qcow2 -B golden.qcow2 -F qcow2 changed.raw overlay.qcow2 || fail "-B: convert failed"
[ "$(qemu-img info --output=json overlay.qcow2 | jq -r '.["backing-filename"]')" = golden.qcow2 ] ||
  fail "-B: wrong backing file name"
[ "$(qemu-img info --output=json overlay.qcow2 | jq -r '.["backing-filename-format"]')" = qcow2 ] ||
  fail "-B: wrong backing format"
qemu-img compare -q changed.raw overlay.qcow2 || fail "-B: overlay differs from the source"
qemu-img check -q overlay.qcow2 || fail "-B: qemu-img check found problems"
top_bytes=$(qemu-img map --output=json overlay.qcow2 | jq '[.[] | select(.depth == 0 and (.data or .zero)) | .length] | add // 0')
[ "$top_bytes" -le $((12 << 20)) ] || fail "-B: the overlay holds $top_bytes bytes, more than what differs"
# From the overlay's own chain, and with a raw backing file.
qemu-img convert base.qcow2 base.raw
convert B-raw top.qcow2 overlay2.qcow2 -O qcow2 -B base.raw -F raw -o cluster_size=512
[ "$(qemu-img map --output=json overlay2.qcow2 | jq '[.[] | select(.depth == 0 and .data) | .length] | add // 0')" -le $((12 << 20)) ] ||
  fail "-B raw: the overlay holds more than what differs"
convert B-v2 top.qcow2 overlay3.qcow2 -O qcow2 -B base.raw -F raw -o compat=0.10
pass "-B writes only what differs from the backing file"

# -n: into an existing, larger image holding other data.
qemu-img create -q -f qcow2 existing.qcow2 80M
qemu-io -f qcow2 -c 'write -P 0x77 0 80M' existing.qcow2 >/dev/null
"$LUNA_IMG" convert -n -O qcow2 holes.qcow2 existing.qcow2 || fail "-n: convert failed"
qemu-img convert existing.qcow2 existing-out.raw
qemu-img convert holes.qcow2 holes-q.raw
cmp -n $((64 << 20)) holes-q.raw existing-out.raw || fail "-n: output differs from the source"
[ "$(qemu-io -f raw -c 'read -P 0x77 64M 16M' existing-out.raw | grep -c 'read ')" = 1 ] ||
  fail "-n: the output's tail was touched"
qemu-img check -q existing.qcow2 || fail "-n: qemu-img check found problems"
head -c 70M /dev/urandom > existing.raw
"$LUNA_IMG" convert -n holes.raw existing.raw || fail "-n raw: convert failed"
cmp -n $((64 << 20)) holes.raw existing.raw || fail "-n raw: output differs from the source"
qemu-img create -q -f raw tiny.raw 1M
out=$("$LUNA_IMG" convert -n holes.raw tiny.raw 2>&1) && fail "-n: a small output was accepted"
[ "$out" = "luna-img: output file is smaller than input file" ] || fail "-n small: '$out'"
pass "-n converts into existing images"

# -S: sparse detection; -S 0 allocates everything.
"$LUNA_IMG" convert -S 0 holes.raw full.raw && qemu-img compare -q holes.raw full.raw || fail "-S 0 failed"
"$LUNA_IMG" convert holes.raw sparse.raw && qemu-img compare -q holes.raw sparse.raw || fail "-S 4k failed"
[ "$(du -k full.raw | cut -f1)" -ge 65536 ] || fail "-S 0: output not fully allocated ($(du -k full.raw))"
[ "$(du -k sparse.raw | cut -f1)" -lt 20000 ] || fail "-S 4k: output too allocated ($(du -k sparse.raw))"
# The zeroes written as data (10M..12M) are not written by default, but are with -S 0.
[ "$(allocated sparse.raw)" -lt "$(allocated holes.raw)" ] || fail "-S 4k: zero data was written"
convert S0-qcow2 holes.raw full.qcow2 -O qcow2 -S 0
[ "$(allocated full.qcow2)" = $((64 << 20)) ] || fail "-S 0 qcow2: $(allocated full.qcow2) bytes allocated"
convert S64k holes.raw s64k.qcow2 -O qcow2 -S 64k
[ "$(allocated s64k.qcow2)" = "$(allocated out1.qcow2)" ] || fail "-S 64k and 4k allocate differently on 64k clusters"
pass "-S 0 allocates everything, -S 4k skips zero blocks"

# -m and -W.
convert m1 holes.raw m1.qcow2 -O qcow2 -m 1
convert m16 holes.raw m16.qcow2 -O qcow2 -m 16
convert m16W holes.raw m16w.qcow2 -O qcow2 -m 16 -W
convert m16W-raw holes.qcow2 m16w.raw -m 16 -W
convert m3-c512 holes.qcow2 m3.qcow2 -O qcow2 -m 3 -o cluster_size=512
cmp -s m1.qcow2 m16.qcow2 || fail "-m 1 and -m 16 give different images (in-order writes)"
pass "-m 1, -m 16, -W"

# Several inputs are concatenated.
"$LUNA_IMG" convert -O qcow2 odd.raw holes.qcow2 odd.raw cat.qcow2 || fail "concatenation failed"
qemu-img convert odd.raw holes.qcow2 odd.raw cat-q.raw
qemu-img compare -q cat-q.raw cat.qcow2 || fail "concatenation differs from qemu-img's"
qemu-img check -q cat.qcow2 || fail "concatenation: qemu-img check found problems"
pass "several inputs are concatenated"

# Cache modes.
convert cache-none holes.raw cache.qcow2 -O qcow2 -t none -T none
convert cache-wt holes.raw cache.raw -t writethrough -T directsync
pass "-t and -T cache modes"

# Progress: the same lines as qemu-img's.
for flags in "" "-S 0"; do
  for source in holes.raw holes.qcow2 odd.raw; do
    # With -S 0, qemu-img splits ranges around qcow2 zero clusters a little differently.
    [ "$flags" = "-S 0" ] && [ "$source" = holes.qcow2 ] && continue
    # shellcheck disable=SC2086
    q=$(qemu-img convert -p $flags "$source" p-q.raw | od -c)
    # shellcheck disable=SC2086
    l=$("$LUNA_IMG" convert -p $flags "$source" p-l.raw | od -c)
    [ "$q" = "$l" ] || fail "-p $flags $source: progress differs from qemu-img's: $(diff <(echo "$q") <(echo "$l"))"
  done
done
[ -z "$("$LUNA_IMG" convert -p -q holes.raw p-l.raw)" ] || fail "-q does not silence -p"
pass "-p prints qemu-img's progress"

# Errors: qemu-img's messages and exit codes.
qemu-img create -q -f raw src.raw 8M
while IFS= read -r args; do
  rm -f o.raw o.qcow2
  # shellcheck disable=SC2086
  q=$(qemu-img convert $args 2>&1; echo "exit $?")
  rm -f o.raw o.qcow2
  # shellcheck disable=SC2086
  l=$("$LUNA_IMG" convert $args 2>&1; echo "exit $?")
  [ "${q//qemu-img/luna-img}" = "$l" ] || fail "convert $args: '$l', qemu-img says '$q'"
done <<'EOF'
nonexist.raw o.raw
-f qcow2 src.raw o.qcow2
-O vmdk2 src.raw o.raw
-S 100 src.raw o.raw
-S abc src.raw o.raw
-m 17 src.raw o.raw
-m 0 src.raw o.raw
src.raw
-B src.raw src.raw o.qcow2
-O qcow2 -B src.raw src.raw o.qcow2
-O qcow2 -B src.raw -F raw src.raw src.raw o.qcow2
-F raw src.raw o.raw
-t bogus src.raw o.raw
-T bogus src.raw o.raw
-O raw -c src.raw o.raw
-O qcow2 -c -o preallocation=metadata src.raw o.qcow2
-O qcow2 -o foo=bar src.raw o.qcow2
-O qcow2 -o cluster_size=3 src.raw o.qcow2
-O qcow2 -o lazy_refcounts=maybe src.raw o.qcow2
-O qcow2 -o compat=0.9 src.raw o.qcow2
-O qcow2 -o compat=0.10,refcount_bits=8 src.raw o.qcow2
-x src.raw o.raw
-n src.raw missing.raw
-f bogus src.raw o.raw
--target-is-zero src.raw o.raw
-f raw src.raw /nonexistent-dir/o.raw
EOF
pass "error cases match qemu-img"
