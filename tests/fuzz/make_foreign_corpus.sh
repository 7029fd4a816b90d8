#!/bin/sh
# Regenerate the seed corpus of fuzz_foreign_open (tests/fuzz/corpus/foreign_open): small
# vmdk, vdi and vpc images made by qemu-img, one per layout the drivers read.  Needs
# qemu-utils (qemu-img, qemu-io).
#
#   tests/fuzz/make_foreign_corpus.sh [output-dir]
#
# Virtual disks of 1-4 MiB with a little data: vdi and vpc blocks are 1-2 MiB whatever is
# written, so their files stay near that size (mostly zeroes, which git compresses).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus/foreign_open}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# make NAME FORMAT SIZE CREATE-OPTIONS [QEMU-IO-COMMANDS...]
make() {
    name=$1 format=$2 size=$3 options=$4
    shift 4
    image=$work/$name
    qemu-img create -q -f "$format" -o "$options" "$image" "$size"
    for command in "$@"; do
        qemu-io -f "$format" -c "$command" "$image" >/dev/null
    done
    cp "$image" "$out/$name"
}

make vmdk_sparse_empty vmdk 1M subformat=monolithicSparse
make vmdk_sparse_data vmdk 1M subformat=monolithicSparse 'write -P 1 4k 8k'
make vmdk_zeroed_grain vmdk 1M subformat=monolithicSparse,zeroed_grain=on 'write -P 2 0 64k' 'write -z 0 64k'
make vdi_dynamic_empty vdi 4M static=off
make vdi_dynamic_data vdi 1M static=off 'write -P 3 512 4k'
make vpc_dynamic_empty vpc 4M subformat=dynamic
make vpc_dynamic_data vpc 1M subformat=dynamic 'write -P 4 1k 2k'
make vpc_fixed vpc 64k subformat=fixed 'write -P 5 0 1k'
make vpc_current_size vpc 1M subformat=dynamic,force_size=on
# streamOptimized is written by convert only (compressed grains, footer at the end).
printf 'luna foreign corpus: compressible text %s\n' 1 2 3 4 5 6 7 8 >"$work/text"
qemu-img create -q -f raw "$work/source" 1M
dd if="$work/text" of="$work/source" conv=notrunc status=none
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$work/source" "$out/vmdk_stream"
