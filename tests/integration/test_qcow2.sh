#!/usr/bin/env bash
# qcow2 interoperability with QEMU (export option format=qcow2):
#  1. images made by qemu-img/qemu-io (cluster sizes, compat, refcount widths,
#     extended L2, a backing chain, zlib/zstd compression, internal snapshots)
#     read through lunad byte-exact against `qemu-img convert -O raw`;
#  2. writes through lunad (fio randwrite + seq write with crc32c verify,
#     nbdcopy of random data) leave images `qemu-img check` clean, equal to
#     what lunad served, backing files and snapshots untouched;
#  3. NBD zero (with/without may-trim) and trim on a v3 image;
#  4. images lunad must refuse (or serve read-only only).
# Every failing case is reported; the test fails at the end if any did.
source "$(dirname "$0")/lib.sh"
# fio's nbd engine leaves verify state files in the working directory.
cd "$WORK"

MiB=$((1024 * 1024))
failures=0
soft_fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
case_begin() { echo "--- $*"; }

port=$(free_port)
uri() { echo "nbd://127.0.0.1:$port/$1"; }

# qio IMAGE COMMAND...: qemu-io on a qcow2 image; any error is fatal (set-up).
qio() { qio_format qcow2 "$@"; }
qio_format() {
  local format=$1 file=$2; shift 2
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  local out
  out=$(qemu-io -f "$format" "${args[@]}" "$file" 2>&1) || { echo "$out"; fail "qemu-io on $file"; }
  if grep -qiE "error|failed|invalid" <<<"$out"; then echo "$out"; fail "qemu-io on $file"; fi
}

# ---------------------------------------------------------------- images
# seed.raw (32 MiB): random data, holes and explicit zeroes, so every image
# made from it has cluster-unique content (a misplaced cluster shows).
seed=$WORK/seed.raw
truncate -s 32M "$seed"
for range in 0:6 10:4 15:9; do
  head -c $((${range#*:} * MiB)) /dev/urandom |
    dd of="$seed" bs=1M seek="${range%:*}" conv=notrunc status=none
done
dd if=/dev/zero of="$seed" bs=1M seek=14 count=1 conv=notrunc status=none

# Writes every 32 MiB image gets on top of the seed: patterns, unaligned
# writes, zero writes with and without unmap, discards, the last sector.
common_writes=(
  "write -P 0x11 0 3M"
  "write -P 0x22 5M 64k"
  "write -P 0x33 6291000 100000"
  "write -P 0x44 8M 2M"
  "write -z 8650752 300000"
  "write -z -u 9M 512k"
  "discard 1M 1M"
  "write -P 0x55 12M 4M"
  "discard 13M 1M"
  "write -z 16M 2M"
  "write -P 0x66 20971520 4096"
  "write -P 0x77 31M 1M"
  "write -P 0x88 33553920 512"
)
# Sub-cluster work for extended L2 (64 KiB clusters, 2 KiB subclusters).
subcluster_writes=(
  "write -P 0xa1 $((26 * MiB + 2048)) 2048"
  "write -P 0xa2 $((26 * MiB + 10240)) 6144"
  "write -z $((26 * MiB + 4096)) 2048"
  "write -P 0xa3 $((27 * MiB + 1000)) 3000"
  "write -z 2050 4096"
  "write -z $((5 * 65536 + 3 * 2048)) 8192"
  "discard $((8 * MiB + 65536 + 4096)) 4096"
  "write -P 0xa4 $((28 * MiB + 63 * 1024)) 2048"
)

# from_seed NAME CREATE-OPTIONS: NAME.qcow2 = seed converted, then common writes.
from_seed() {
  local name=$1 options=$2
  qemu-img convert -f raw -O qcow2 -o "$options" "$seed" "$WORK/$name.qcow2" >/dev/null ||
    fail "qemu-img convert seed -> $name ($options)"
  qio "$WORK/$name.qcow2" "${common_writes[@]}"
}

echo "creating images"
from_seed c512 cluster_size=512
from_seed c64k cluster_size=64k,compat=1.1
from_seed c2m cluster_size=2M
from_seed v2 compat=0.10
from_seed rc1 refcount_bits=1
from_seed rc16 refcount_bits=16,cluster_size=4k
from_seed rc64 refcount_bits=64
from_seed el2 extended_l2=on
qio "$WORK/el2.qcow2" "${subcluster_writes[@]}"
# Extended L2 over a backing file: unallocated subclusters read the backing file.
qemu-img create -q -f qcow2 -o extended_l2=on -b "$seed" -F raw "$WORK/el2b.qcow2" 32M
qio "$WORK/el2b.qcow2" "${subcluster_writes[@]}" "write -P 0x12 1M 3000" "write -z 3M 64k" "discard 12M 128k"

# Compressed: a raw source with incompressible and compressible clusters,
# converted with -c, then normal and compressed writes on top.
compsrc=$WORK/compsrc.raw
cp "$seed" "$compsrc"
qio_format raw "$compsrc" "${common_writes[@]}"
compress_writes=(
  "write -P 0xc1 $((2 * MiB + 1000)) 5000"
  "write -z 4M 128k"
  "discard 11M 192k"
  "write -c -P 0xc2 25M 128k"
  "write -c -P 0xc3 $((27 * MiB)) 64k"
  "write -P 0xc4 $((25 * MiB + 4096)) 512"
)
qemu-img convert -c -f raw -O qcow2 "$compsrc" "$WORK/zlib.qcow2" || fail "qemu-img convert -c (zlib)"
qio "$WORK/zlib.qcow2" "${compress_writes[@]}"
qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd,cluster_size=16k "$compsrc" "$WORK/zstd.qcow2" ||
  fail "qemu-img convert -c (zstd)"
qio "$WORK/zstd.qcow2" "${compress_writes[@]}"
for name in zlib zstd; do
  qemu-img check "$WORK/$name.qcow2" | grep -E "[1-9][0-9.]*% compressed clusters" ||
    fail "$name.qcow2 has no compressed clusters"
done

# Internal snapshots: s1 and s2 share clusters with the active layer.
qemu-img convert -f raw -O qcow2 "$seed" "$WORK/snap.qcow2"
qio "$WORK/snap.qcow2" "write -P 0x91 0 2M" "write -P 0x92 8M 1M"
qemu-img snapshot -c s1 "$WORK/snap.qcow2"
qio "$WORK/snap.qcow2" "write -P 0x93 1M 2M" "write -z $((8 * MiB + 65536)) 128k" "discard 12M 1M" \
  "write -P 0x94 20M 64k"
qemu-img snapshot -c s2 "$WORK/snap.qcow2"
qio "$WORK/snap.qcow2" "write -P 0x95 0 512k" "write -P 0x96 $((22 * MiB + 3)) 70000"

# Backing chain: raw base (31 MiB + 2560, not cluster aligned) <- mid1 (32 MiB,
# 4 KiB clusters, absolute backing name) <- mid2 (48 MiB, relative name) <-
# top (48 MiB, 128 KiB clusters, relative name).
chain=$WORK/chain
mkdir "$chain"
head -c $((31 * MiB + 2560)) /dev/urandom >"$chain/base.raw"
qemu-img create -q -f qcow2 -o cluster_size=4k -b "$chain/base.raw" -F raw "$chain/mid1.qcow2" 32M
qio "$chain/mid1.qcow2" "write -P 0x61 1M 1M" "write -P 0x62 30M 512k" "write -P 0x63 $((31 * MiB + 1024)) 1024" \
  "write -z 4M 1M" "discard 6M 512k" "write -P 0x64 $((32 * MiB - 512)) 512"
(cd "$chain" && qemu-img create -q -f qcow2 -b mid1.qcow2 -F qcow2 mid2.qcow2 48M)
qio "$chain/mid2.qcow2" "write -P 0x71 2M 1M" "write -P 0x72 $((31 * MiB + 3000)) 5000" "write -P 0x73 40M 1M" \
  "write -P 0x74 $((32 * MiB - 4096)) 8192" "write -z 1M 256k" "discard 10M 1M"
(cd "$chain" && qemu-img create -q -f qcow2 -o cluster_size=128k -b mid2.qcow2 -F qcow2 top.qcow2 48M)
qio "$chain/top.qcow2" "write -P 0x81 3M 100k" "write -P 0x82 $((33 * MiB + 5)) 1000" "write -z $((2 * MiB + 65536)) 64k" \
  "write -P 0x83 $((47 * MiB)) 1M" "discard 40M 256k"
grep -q '"backing-filename": "mid2.qcow2"' <(qemu-img info --output=json "$chain/top.qcow2") ||
  fail "top.qcow2 does not name its backing file relatively"

# name -> image path; which are served writable (and written in part 2).
declare -A image=(
  [c512]=$WORK/c512.qcow2 [c64k]=$WORK/c64k.qcow2 [c2m]=$WORK/c2m.qcow2 [v2]=$WORK/v2.qcow2
  [rc1]=$WORK/rc1.qcow2 [rc16]=$WORK/rc16.qcow2 [rc64]=$WORK/rc64.qcow2 [el2]=$WORK/el2.qcow2
  [el2b]=$WORK/el2b.qcow2 [zlib]=$WORK/zlib.qcow2 [zstd]=$WORK/zstd.qcow2 [snap]=$WORK/snap.qcow2
  [mid1]=$chain/mid1.qcow2 [mid2]=$chain/mid2.qcow2 [top]=$chain/top.qcow2
)
read_names=(c512 c64k c2m v2 rc1 rc16 rc64 el2 el2b zlib zstd snap mid1 mid2 top)
write_names=(top zlib zstd snap v2 el2 el2b c512 c2m rc1)
declare -A writable=()
for name in "${write_names[@]}"; do writable[$name]=1; done

# References made by QEMU before lunad opens anything.
for name in "${read_names[@]}"; do
  qemu-img convert -f qcow2 -O raw "${image[$name]}" "$WORK/$name.ref" || fail "qemu-img convert $name -> raw"
done
for s in s1 s2; do
  qemu-img convert -f qcow2 -O raw -l "$s" "$WORK/snap.qcow2" "$WORK/snap-$s.before" || fail "convert -l $s"
done
(cd "$chain" && sha256sum base.raw mid1.qcow2 mid2.qcow2) >"$WORK/backing.sha256"

exports=()
for name in "${read_names[@]}"; do
  spec="$name=${image[$name]},format=qcow2"
  [ -n "${writable[$name]:-}" ] || spec+=",readonly=on"
  exports+=(--export "$spec")
done
luna_start --nbd "127.0.0.1:$port" --workers 2 "${exports[@]}"

# ---------------------------------------------------------------- 1. reads
for name in "${read_names[@]}"; do
  case_begin "read $name (${image[$name]##*/}): nbdcopy through lunad == qemu-img convert -O raw"
  rm -f "$WORK/out.raw"
  if ! nbdcopy "$(uri "$name")" "$WORK/out.raw"; then
    soft_fail "nbdcopy of export $name"; continue
  fi
  if cmp "$WORK/out.raw" "$WORK/$name.ref"; then pass "$name reads byte-exact"
  else soft_fail "$name: lunad's content differs from qemu-img convert"; fi
done
rm -f "$WORK/out.raw"

# ---------------------------------------------------------------- 2. writes
# fio's nbd engine: two randwrite jobs (4k, QD32) in their own regions, then
# a 64k sequential writer, each verifying crc32c; returns non-zero on error.
run_fio() {
  local name=$1 label=$2; shift 2
  local status=0
  fio --name="$label" --ioengine=nbd --uri="$(uri "$name")" --verify=crc32c --verify_fatal=1 --do_verify=1 \
    --group_reporting=0 --output-format=json --output="$WORK/fio.json" "$@" >"$WORK/fio.out" 2>&1 || status=$?
  if [ $status -ne 0 ]; then
    tail -n 40 "$WORK/fio.out" "$WORK/fio.json" 2>/dev/null
    return 1
  fi
  "$SYSTEM_PYTHON" - "$WORK/fio.json" "${@: -1}" <<'PY' || { cat "$WORK/fio.out"; return 1; }
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):])
bad = False
for job in doc["jobs"]:
    w, r = job["write"]["io_bytes"], job["read"]["io_bytes"]
    print(f"  {job['jobname']}: error {job['error']}, wrote {w >> 10} KiB, verified {r >> 10} KiB")
    bad |= job["error"] != 0 or r == 0 or (w == 0 and "--verify_only" not in sys.argv[2:])
sys.exit(1 if bad else 0)
PY
}

# Random data for nbdcopy: 5 MiB with a 1 MiB hole (nbdcopy zeroes it).
rand=$WORK/rand.raw
truncate -s 5M "$rand"
head -c $((2 * MiB)) /dev/urandom | dd of="$rand" conv=notrunc status=none
head -c $((2 * MiB)) /dev/urandom | dd of="$rand" bs=1M seek=3 conv=notrunc status=none

for name in "${write_names[@]}"; do
  size=$(stat -c %s "$WORK/$name.ref")
  seq_size=$((size - 24 * MiB))
  case_begin "write $name: fio randwrite 4k QD32 x2 jobs [0,8M) [12M,20M) + seq 64k [22M,$((22 + seq_size / MiB))M), crc32c verify"
  run_fio "$name" "$name-rand" --rw=randwrite --bs=4k --iodepth=32 --numjobs=2 --size=8M \
    --offset_increment=12M || soft_fail "$name: fio randwrite verify"
  run_fio "$name" "$name-seq" --rw=write --bs=64k --iodepth=8 --offset=22M --size=$seq_size ||
    soft_fail "$name: fio sequential write verify"
  case_begin "write $name: 2 fio jobs interleaving 4k blocks in the same clusters of [8M,12M) (allocation/COW races)"
  run_fio "$name" "$name-interleave" --rw=write:4k --bs=4k --iodepth=32 --numjobs=2 --offset=8M --size=4M \
    --offset_increment=4k || soft_fail "$name: fio interleaved writers verify"
  # Each job verified its blocks as soon as it finished, perhaps before the
  # other one's last copy-on-write into shared clusters: verify both again.
  run_fio "$name" "$name-interleave" --rw=write:4k --bs=4k --iodepth=32 --numjobs=2 --offset=8M --size=4M \
    --offset_increment=4k --verify_only || soft_fail "$name: data of interleaved writers changed afterwards"
  case_begin "write $name: nbdcopy 5 MiB of random data (with a zero hole) over [0,5M)"
  nbdcopy "$rand" "$(uri "$name")" || soft_fail "$name: nbdcopy random data into the export"
  rm -f "$WORK/$name.served"
  nbdcopy "$(uri "$name")" "$WORK/$name.served" || soft_fail "$name: nbdcopy export out after writes"
  cmp -n $((5 * MiB)) "$rand" "$WORK/$name.served" || soft_fail "$name: nbdcopy'd random data reads back different"
done

luna_alive
luna_stop

for name in "${write_names[@]}"; do
  case_begin "after writes $name: qemu-img check clean, qemu-img convert == what lunad served"
  if out=$(qemu-img check -f qcow2 "${image[$name]}" 2>&1); then pass "$name: qemu-img check clean"
  else echo "$out" | tail -n 20; soft_fail "$name: qemu-img check reports errors or leaks"; fi
  qemu-img convert -f qcow2 -O raw "${image[$name]}" "$WORK/$name.after" || soft_fail "$name: convert after writes"
  if cmp "$WORK/$name.after" "$WORK/$name.served"; then pass "$name: QEMU reads what lunad served"
  else soft_fail "$name: QEMU reads different data than lunad served"; fi
  rm -f "$WORK/$name.after" "$WORK/$name.served" "$WORK/$name.ref"
done

case_begin "backing chain: base.raw, mid1, mid2 unchanged by writes to top"
if (cd "$chain" && sha256sum --quiet -c "$WORK/backing.sha256"); then pass "backing files unchanged"
else soft_fail "a backing file changed while writing to top.qcow2"; fi

case_begin "snapshots of snap.qcow2 keep their content (shared clusters were copied, not overwritten)"
for s in s1 s2; do
  qemu-img convert -f qcow2 -O raw -l "$s" "$WORK/snap.qcow2" "$WORK/snap-$s.after" || soft_fail "convert -l $s after"
  if cmp "$WORK/snap-$s.before" "$WORK/snap-$s.after"; then pass "snapshot $s unchanged"
  else soft_fail "snapshot $s changed by writes to the active layer"; fi
done

# ---------------------------------------------------------------- 3. zero and trim
case_begin "zero/trim on a qcow2 v3 image (64k clusters, fully allocated with 0x5c)"
zt=$WORK/zt.qcow2
qemu-img create -q -f qcow2 -o compat=1.1 "$zt" 32M
qio "$zt" "write -P 0x5c 0 32M"
luna_start --nbd "127.0.0.1:$port" --export "zt=$zt,format=qcow2"
# Ranges "offset length kind": zero (may trim), zero-nohole, trim.  Unaligned
# ones check the partial clusters at their edges.
zt_ranges="$((1 * MiB)) $((3 * MiB)) zero
$((6 * MiB + 1000)) $((2 * MiB + 12345)) zero-nohole
$((10 * MiB)) $((1 * MiB)) zero-nohole
$((13 * MiB + 777)) $((3 * MiB / 2)) zero
$((16 * MiB)) $((2 * MiB)) trim
$((20 * MiB + 4096)) $((1 * MiB)) trim-unaligned"
"$SYSTEM_PYTHON" - "$(uri zt)" "$zt_ranges" <<'PY' || soft_fail "zero/trim through NBD"
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
ranges = [(int(o), int(l), k) for o, l, k in (line.split() for line in sys.argv[2].splitlines())]
bad = False
for off, length, kind in ranges:
    if kind == "zero":
        h.zero(length, off)
    elif kind == "zero-nohole":
        h.zero(length, off, nbd.CMD_FLAG_NO_HOLE)
    else:
        h.trim(length, off)
h.flush()
for off, length, kind in ranges:
    if kind == "trim-unaligned":
        continue  # partial clusters may keep their data
    data = h.pread(length, off)
    if data != bytes(length):
        first = next(i for i, b in enumerate(data) if b)
        print(f"  {kind} [{off}, +{length}): byte {off + first} reads {data[first]:#x}, not 0"); bad = True
    for edge in (off - 1, off + length):
        b = h.pread(1, edge)[0]
        if b != 0x5c:
            print(f"  {kind} [{off}, +{length}): byte {edge} just outside reads {b:#x}, not 0x5c"); bad = True
    if not bad:
        print(f"  {kind} [{off}, +{length}) reads zeroes, edges intact")
h.shutdown()
sys.exit(1 if bad else 0)
PY
nbdinfo --map --json "$(uri zt)" >"$WORK/zt.nbdmap" || soft_fail "nbdinfo --map"
rm -f "$WORK/zt.served"
nbdcopy "$(uri zt)" "$WORK/zt.served" || soft_fail "nbdcopy zt"
luna_stop
out=$(qemu-img check -f qcow2 "$zt" 2>&1) || { echo "$out"; soft_fail "zt: qemu-img check after zero/trim"; }
qemu-img convert -f qcow2 -O raw "$zt" "$WORK/zt.after"
cmp "$WORK/zt.after" "$WORK/zt.served" || soft_fail "zt: QEMU reads different data than lunad served"
qemu-img map -f qcow2 --output=json "$zt" >"$WORK/zt.qmap"
"$SYSTEM_PYTHON" - "$WORK/zt.nbdmap" "$WORK/zt.qmap" "$zt_ranges" $((64 * 1024)) <<'PY' || soft_fail "zero/trim block status"
import json, sys
nbdmap = json.load(open(sys.argv[1]))
qmap = json.load(open(sys.argv[2]))
cluster = int(sys.argv[4])
size = qmap[-1]["start"] + qmap[-1]["length"]
def zero_at(extents, get):
    # byte-granular is too much: sample every 512 bytes
    bits = bytearray(size // 512)
    for e in extents:
        start, length, zero = get(e)
        for s in range(start // 512, (start + length) // 512):
            bits[s] = zero
    return bits
nz = zero_at(nbdmap, lambda e: (e["offset"], e["length"], 1 if e["type"] & 2 else 0))
qz = zero_at(qmap, lambda e: (e["start"], e["length"], 1 if e["zero"] else 0))
bad = False
for line in sys.argv[3].splitlines():
    off, length, kind = line.split()
    off, length = int(off), int(length)
    first = -(-off // cluster) * cluster
    last = (off + length) // cluster * cluster
    for name, bits in (("nbdinfo --map", nz), ("qemu-img map", qz)):
        if not all(bits[first // 512:last // 512]):
            print(f"  {name}: whole clusters of {kind} [{off}, +{length}) not all reported zero"); bad = True
    if not bad:
        print(f"  {kind}: clusters [{first}, {last}) zero in nbdinfo --map and qemu-img map")
diff = [i for i in range(len(nz)) if nz[i] != qz[i]]
if diff:
    print(f"  nbdinfo --map and qemu-img map disagree on zero at {len(diff)} sectors, first at byte {diff[0] * 512}")
    bad = True
else:
    print("  nbdinfo --map and qemu-img map agree on every zero range")
sys.exit(1 if bad else 0)
PY
rm -f "$WORK/zt.after" "$WORK/zt.served"

# ---------------------------------------------------------------- 4. errors
# expect_refusal LABEL TEXT EXPORT-SPEC: lunad must exit non-zero at start-up
# with TEXT in its output.
# nbdsh_python_write_refused URI: true when a write over NBD fails (a read-only export).
nbdsh_python_write_refused() {
  "$SYSTEM_PYTHON" - "$1" <<'PY'
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
try:
    h.pwrite(b"x" * 512, 0)
except nbd.Error:
    sys.exit(0)
sys.exit(1)
PY
}

expect_refusal() {
  local label=$1 text=$2 spec=$3 status=0
  case_begin "refuse $label"
  timeout 10 "$LUNAD" --nbd "127.0.0.1:$port" --export "$spec" >"$WORK/refuse.log" 2>&1 || status=$?
  sed 's/^/  lunad: /' "$WORK/refuse.log" | head -n 5
  if grep -qE "Sanitizer|runtime error" "$WORK/refuse.log"; then
    cat "$WORK/refuse.log"; soft_fail "$label: sanitizer report while refusing the export"
  elif [ $status -eq 0 ] || [ $status -eq 124 ]; then
    soft_fail "$label: lunad started (exit $status) instead of refusing the export"
  elif ! grep -qF -- "$text" "$WORK/refuse.log"; then
    soft_fail "$label: lunad's message does not contain '$text'"
  else
    pass "$label refused (exit $status), message names '$text'"
  fi
}
# set_incompat_bit IMAGE BIT: set one incompatible feature bit (header bytes 72-79, big-endian).
set_incompat_bit() {
  local file=$1 bit=$2
  local at=$((79 - bit / 8))
  local old
  old=$(od -An -tu1 -j "$at" -N1 "$file" | tr -d ' ')
  # shellcheck disable=SC2059 # the format is the octal escape of the new byte
  printf "\\$(printf %03o $((old | (1 << (bit % 8)))))" | dd of="$file" bs=1 seek="$at" conv=notrunc status=none
}

cp "$seed" "$WORK/plain.raw"
expect_refusal "a raw file given format=qcow2" "$WORK/plain.raw" "bad=$WORK/plain.raw,format=qcow2"

qemu-img create -q -f qcow2 "$WORK/unknown.qcow2" 32M
set_incompat_bit "$WORK/unknown.qcow2" 10
qemu-img info "$WORK/unknown.qcow2" >/dev/null 2>&1 && fail "set-up: QEMU still opens unknown.qcow2"
expect_refusal "unknown incompatible feature bit 10" "unsupported qcow2 feature" "bad=$WORK/unknown.qcow2,format=qcow2"

mkdir "$WORK/orphan"
qemu-img create -q -f raw "$WORK/orphan/gone.raw" 32M
(cd "$WORK/orphan" && qemu-img create -q -f qcow2 -b gone.raw -F raw child.qcow2)
rm "$WORK/orphan/gone.raw"
expect_refusal "a missing backing file" "gone.raw" "bad=$WORK/orphan/child.qcow2,format=qcow2"

qemu-img convert -f raw -O qcow2 "$seed" "$WORK/corrupt.qcow2"
qemu-img convert -f qcow2 -O raw "$WORK/corrupt.qcow2" "$WORK/corrupt.ref"
set_incompat_bit "$WORK/corrupt.qcow2" 1
qemu-img info "$WORK/corrupt.qcow2" | grep -q "corrupt: true" || fail "set-up: corrupt bit not set"
case_begin "the corrupt bit, read-write asked: served read-only, and lunad says why"
sum_before=$(sha256sum <"$WORK/corrupt.qcow2")
luna_start --nbd "127.0.0.1:$port" --export "corrupt=$WORK/corrupt.qcow2,format=qcow2"
if nbdinfo "$(uri corrupt)" | grep -q "is_read_only: true" &&
   grep -q "opened read-only: the image is marked corrupt" "$LUNAD_LOG"; then
  pass "corrupt image opened read-only with a warning"
else
  soft_fail "corrupt image: not read-only, or no warning in the log"
fi
if nbdsh_python_write_refused "$(uri corrupt)"; then pass "writes refused"; else soft_fail "a write reached the corrupt image"; fi
luna_stop
[ "$(sha256sum <"$WORK/corrupt.qcow2")" = "$sum_before" ] || soft_fail "the corrupt image was modified"
case_begin "the corrupt bit, readonly=on: served, reads equal qemu-img convert"
sum_before=$(sha256sum <"$WORK/corrupt.qcow2")
luna_start --nbd "127.0.0.1:$port" --export "corrupt=$WORK/corrupt.qcow2,format=qcow2,readonly=on"
rm -f "$WORK/out.raw"
if nbdcopy "$(uri corrupt)" "$WORK/out.raw" && cmp "$WORK/out.raw" "$WORK/corrupt.ref"; then
  pass "corrupt image served read-only, byte-exact"
else
  soft_fail "corrupt image read-only: reads differ or failed"
fi
luna_stop
[ "$(sha256sum <"$WORK/corrupt.qcow2")" = "$sum_before" ] || soft_fail "the read-only corrupt image was modified"

case_begin "a dirty image (lazy refcounts, writer killed): refcounts repaired at open, served writable"
qemu-img create -q -f qcow2 -o lazy_refcounts=on "$WORK/dirty.qcow2" 32M
(ulimit -c 0; qemu-io -c "write -P 0x5a 0 4M" -c abort "$WORK/dirty.qcow2" >/dev/null 2>&1) 2>/dev/null || true
qemu-img check "$WORK/dirty.qcow2" >/dev/null 2>&1 && fail "set-up: the aborted writer left a clean image"
luna_start --nbd "127.0.0.1:$port" --export "dirty=$WORK/dirty.qcow2,format=qcow2"
if nbdinfo "$(uri dirty)" | grep -q "is_read_only: false" && grep -q "refcounts repaired" "$LUNAD_LOG" &&
   [ "$(nbdcopy "$(uri dirty)" - | head -c 4194304 | tr -d '\132' | wc -c)" -eq 0 ]; then
  pass "dirty image repaired, writable, its data intact"
else
  soft_fail "dirty image: not repaired, not writable or data lost"
fi
head -c 1M /dev/urandom | nbdcopy - "$(uri dirty)" || soft_fail "writing the repaired image"
luna_stop
qemu-img check "$WORK/dirty.qcow2" >/dev/null || soft_fail "qemu-img check after the repair and writes"

if grep -qE "Sanitizer|runtime error" "$LUNAD_LOG"; then
  grep -A30 -E "Sanitizer|runtime error" "$LUNAD_LOG" | head -n 60; soft_fail "sanitizer report in lunad's log"
fi
[ $failures -eq 0 ] || fail "$failures qcow2 check(s) failed"
pass "qcow2 interoperability"
