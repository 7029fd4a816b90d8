#!/usr/bin/env bash
# luna-img convert against qemu-img convert (a benchmark, not a test: ctest does not run it).
#
# One image of BENCH_SIZE (default 1G): random data with holes (every fourth 8 MiB stretch is
# left unwritten).  Each conversion runs with luna-img, then with qemu-img, one after the other,
# BENCH_RUNS times (default 3, the best time counts), page cache dropped before each run when
# possible (root), outputs removed in between:
#   raw->qcow2   convert -O qcow2 image.raw  out.qcow2
#   qcow2->raw   convert -O raw   image.qcow2 out.raw
# and prints a Markdown table with both times and the ratio luna-img ÷ qemu-img (the issue's
# target: 1.00 or less).  Both tools use their defaults (-m 8, -S 4k, output cache unsafe).
#
# Environment: BENCH_SIZE, BENCH_RUNS, BENCH_DIR (default /var/tmp), LUNA_IMG (default
# build/bin/luna-img of this tree).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
size=${BENCH_SIZE:-1G}
runs=${BENCH_RUNS:-3}
luna_img=${LUNA_IMG:-$repo/build/bin/luna-img}
say() { printf '%s\n' "$*" >&2; }
die() { say "convert.sh: $*"; exit 1; }
command -v qemu-img >/dev/null || die "qemu-img is missing (Debian package: qemu-utils)"
[[ -x $luna_img ]] || die "no luna-img at $luna_img (build first, or set LUNA_IMG)"

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/luna-convert-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"

bytes=$(numfmt --from=iec "$size")
say "preparing a $size image with random data and holes in $dir"
truncate -s "$bytes" image.raw
stretch=$((8 << 20))
for ((offset = 0; offset < bytes; offset += stretch)); do
    (( (offset / stretch) % 4 == 3 )) && continue
    head -c $stretch /dev/urandom | dd of=image.raw bs=1M seek=$((offset >> 20)) conv=notrunc status=none
done
qemu-img convert -O qcow2 image.raw image.qcow2
sync

drop_caches() { [ -w /proc/sys/vm/drop_caches ] && { sync; echo 3 > /proc/sys/vm/drop_caches; } || true; }

# best_time TOOL ARGS...: the best wall time of $runs runs, seconds.
best_time() {
    local best= start end t
    for ((i = 0; i < runs; i++)); do
        rm -f out.qcow2 out.raw
        drop_caches
        start=$(date +%s.%N)
        "$@" >/dev/null
        end=$(date +%s.%N)
        t=$(echo "$end - $start" | bc -l)
        if [ -z "$best" ] || (( $(echo "$t < $best" | bc -l) )); then best=$t; fi
    done
    rm -f out.qcow2 out.raw
    printf '%.3f' "$best"
}

printf '| conversion | luna-img (s) | qemu-img (s) | luna ÷ qemu |\n|:--|--:|--:|--:|\n'
for case in "raw->qcow2|-O qcow2 image.raw out.qcow2" "qcow2->raw|-O raw image.qcow2 out.raw"; do
    name=${case%%|*}
    args=${case#*|}
    # shellcheck disable=SC2086
    luna=$(best_time "$luna_img" convert $args)
    # shellcheck disable=SC2086
    qemu=$(best_time qemu-img convert $args)
    printf '| %s | %s | %s | %.2f |\n' "$name" "$luna" "$qemu" "$(echo "$luna / $qemu" | bc -l)"
done
