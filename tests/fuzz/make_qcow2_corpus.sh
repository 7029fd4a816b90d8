#!/bin/sh
# Regenerate the seed corpus of fuzz_qcow2_open (tests/fuzz/corpus/qcow2_open):
# small images made by qemu-img and written by qemu-io, one per feature the
# driver handles.  Needs qemu-utils (qemu-img, qemu-io).
#
#   tests/fuzz/make_qcow2_corpus.sh [output-dir]
#
# Images stay small (a 1-4 MiB virtual disk, a few KiB of file): the fuzzer
# mutates every byte, so big files only slow it down.  Images with a backing
# file name "b": the fuzzer points every backing name there anyway.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus/qcow2_open}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# make NAME SIZE CREATE-OPTIONS [QEMU-IO-COMMANDS...]
make() {
    name=$1 size=$2 options=$3
    shift 3
    image=$work/$name.qcow2
    qemu-img create -q -f qcow2 -o "$options" "$image" "$size"
    for command in "$@"; do
        qemu-io -f qcow2 -c "$command" "$image" >/dev/null
    done
    cp "$image" "$out/$name"
}

# Data a compressor can shrink, but not to nothing.
compressible() {
    i=0
    while [ $i -lt 64 ]; do
        printf 'luna qcow2 corpus line %04d: the quick brown fox jumps over the lazy dog\n' $i
        i=$((i + 1))
    done
}
compressible >"$work/text"

make empty_v3_c512 1M cluster_size=512
make data_v3_c512 1M cluster_size=512 \
    "write -P 0x11 0 1536" "write -P 0x22 300k 700" "write -z 600k 1k" "write -P 0x33 1023k 1k"
make data_v3_c4k 4M cluster_size=4096 \
    "write -P 0xaa 0 4k" "write -P 0xbb 6k 4k" "write -z -u 1M 8k" "write -P 0xcc 4092k 4k" "discard 1M 4k"
make data_v2_c512 1M cluster_size=512,compat=0.10 \
    "write -P 0x44 0 1k" "write -P 0x55 512k 513" "write -z 700k 1k"
make refcount1_c512 1M cluster_size=512,refcount_bits=1 "write -P 0x66 0 2k" "write -P 0x67 999k 1k"
make refcount64_c512 1M cluster_size=512,refcount_bits=64 "write -P 0x68 4k 1k"
make lazy_refcounts_c4k 1M cluster_size=4096,lazy_refcounts=on "write -P 0x69 8k 8k"
# Extended L2 needs 16 KiB clusters: the smallest such image with data is 96 KiB.
make extended_l2_c16k 2M cluster_size=16k,extended_l2=on \
    "write -P 0x77 1k 2k" "write -z 8k 4k" "write -P 0x78 12k 512"
make compressed_zlib_c4k 1M cluster_size=4096 \
    "write -c -s $work/text 0 4k" "write -c -s $work/text 16k 4k" "write -P 0x88 8k 4k"
make compressed_zlib_c512 1M cluster_size=512 \
    "write -c -s $work/text 0 512" "write -c -s $work/text 1k 512" "write -P 0x89 2k 512"
make compressed_zstd_c4k 1M cluster_size=4096,compression_type=zstd \
    "write -c -s $work/text 0 4k" "write -c -s $work/text 64k 4k" "write -P 0x8a 12k 1k"
make snapshot_c512 1M cluster_size=512 "write -P 0x99 0 2k"
qemu-img snapshot -c first "$work/snapshot_c512.qcow2"
qemu-io -f qcow2 -c "write -P 0x9a 512 1k" "$work/snapshot_c512.qcow2" >/dev/null
cp "$work/snapshot_c512.qcow2" "$out/snapshot_c512"
make snapshot_c4k 1M cluster_size=4096 "write -P 0x9b 0 8k"
qemu-img snapshot -c one "$work/snapshot_c4k.qcow2"
qemu-img snapshot -c two "$work/snapshot_c4k.qcow2"
qemu-io -f qcow2 -c "write -P 0x9c 4k 4k" "$work/snapshot_c4k.qcow2" >/dev/null
cp "$work/snapshot_c4k.qcow2" "$out/snapshot_c4k"

# A persistent bitmap: the autoclear bit a read-write open must clear.
make bitmap_c4k 1M cluster_size=4096 "write -P 0xab 0 4k"
qemu-img bitmap -q --add "$work/bitmap_c4k.qcow2" dirty0 2>/dev/null || qemu-img bitmap --add "$work/bitmap_c4k.qcow2" dirty0
cp "$work/bitmap_c4k.qcow2" "$out/bitmap_c4k"

# External data files, named "d" (qemu-img 7.2 makes and opens them relative to the working directory).
(cd "$work" && make data_file_c512 1M cluster_size=512,data_file=d \
    "write -P 0xe0 0 1536" "write -z 4k 1k" "write -P 0xe1 1023k 1k")
(cd "$work" && make data_file_raw_c4k 1M cluster_size=4096,data_file=d,data_file_raw=on \
    "write -P 0xe2 0 6k" "write -z 64k 8k")

# Backing files: named "b" (raw, so the fuzzer's own "b" fits), with and without a format.
qemu-img create -q -f raw "$work/b" 128k
make backing_raw_c512 1M cluster_size=512,backing_file=b,backing_fmt=raw "write -P 0xd0 1k 1k"
make backing_nofmt_c4k 1M cluster_size=4096,backing_file=b,backing_fmt=raw "write -P 0xd1 0 2k"
# Without the backing format extension (the driver probes): it becomes an unknown, preserved one.
/usr/bin/python3 - "$work/backing_nofmt_c4k.qcow2" <<'EOF'
import struct, sys
path = sys.argv[1]
data = bytearray(open(path, 'rb').read())
# Drop the backing format extension (0xe2792aca): mark it as an unknown one.
offset = struct.unpack('>I', data[100:104])[0]
while offset + 8 <= 65536:
    kind, length = struct.unpack('>II', data[offset:offset + 8])
    if kind == 0:
        break
    if kind == 0xe2792aca:
        data[offset:offset + 4] = struct.pack('>I', 0x12345678)
    offset += 8 + (length + 7) // 8 * 8
open(path, 'wb').write(data)
EOF
cp "$work/backing_nofmt_c4k.qcow2" "$out/backing_nofmt_c4k"
make backing_v2_c512 1M cluster_size=512,compat=0.10,backing_file=b,backing_fmt=raw "write -P 0xd2 2k 512"

# A disk larger than one L2 table maps, with tables far apart.
make two_l2_c512 64M cluster_size=512 "write -P 0xe0 0 512" "write -P 0xe1 40M 1k"

ls -l "$out"
