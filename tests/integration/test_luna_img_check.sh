#!/usr/bin/env bash
# luna-img check against qemu-img check: on clean images of many layouts, on
# images with injected leaks and corruptions and on images left by kill -9 of
# lunad, both tools must exit alike, print the same summary, the same
# per-cluster lines and the same JSON; `-r leaks` and `-r all` must repair
# what qemu-img repairs (qemu-img check then finds the image clean) without
# changing the guest data; a live image is refused without -U.
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img qemu-io jq
PATCH="$SYSTEM_PYTHON $(dirname "$0")/qcow2_patch.py"
cd "$WORK"
mkdir -p q l

# run_both ARGS...: `check ARGS img.qcow2` by both tools, each on its own copy of $WORK/img.qcow2
# (in q/ and l/, so file names in the output are the same).  Sets qs, ls.
run_both() {
  cp img.qcow2 q/img.qcow2
  cp img.qcow2 l/img.qcow2
  qs=0 ls=0
  (cd q && qemu-img check "$@" img.qcow2 >out 2>err) || qs=$?
  (cd l && "$LUNA_IMG" check "$@" img.qcow2 >out 2>err) || ls=$?
}

# compare LABEL EXPECTED_STATUS [ARGS...]: same exit status, stdout and stderr, in human and JSON.
compare() {
  local label=$1 expected=$2; shift 2
  run_both "$@"
  [ "$qs" = "$expected" ] || { cat q/out q/err; fail "$label: qemu-img check $* exited $qs, the test expects $expected"; }
  [ "$ls" = "$qs" ] || { cat l/out l/err; fail "$label: luna-img check $* exited $ls, qemu-img $qs"; }
  diff q/out l/out >/dev/null || fail "$label: check $* output differs: $(diff q/out l/out)"
  diff <(sed 's/^qemu-img: /luna-img: /' q/err) l/err >/dev/null ||
    fail "$label: check $* messages differ: $(diff <(sed 's/^qemu-img: /luna-img: /' q/err) l/err)"
  local repaired_q=q/img.qcow2 repaired_l=l/img.qcow2
  if [ $# -gt 0 ] && [ "$1" = -r ]; then
    # Both repaired images: qemu-img check says the same of each.
    local aq=0 al=0
    qemu-img check "$repaired_q" >/dev/null 2>&1 || aq=$?
    qemu-img check "$repaired_l" >/dev/null 2>&1 || al=$?
    [ "$aq" = "$al" ] || fail "$label: after check $*, qemu-img check exits $aq on qemu-img's repair, $al on luna-img's"
    cp "$repaired_l" repaired.qcow2
  fi
  run_both --output=json "$@"
  [ "$ls" = "$qs" ] || fail "$label: luna-img check --output=json $* exited $ls, qemu-img $qs"
  if [ "$qs" != 1 ]; then
    diff <(jq -S . q/out) <(jq -S . l/out) >/dev/null ||
      fail "$label: check --output=json $* differs: $(diff <(jq -S . q/out) <(jq -S . l/out))"
    diff q/out l/out >/dev/null || fail "$label: JSON key order differs: $(diff q/out l/out)"
  fi
}

# The guest data of an image, as qemu-img reads it.
data_of() { qemu-img convert -U -O raw "$1" "$2"; }

# ---- clean images --------------------------------------------------------------------------
fill() { # image: data, holes, zeroes, overwrites
  qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x22 3M 700k' -c 'write -z 1M 128k' \
    -c 'write -P 0x33 20M 64k' -c 'write -z -u 3M 64k' "$1" >/dev/null
}
clean=(
  "c512|32M|-o cluster_size=512"
  "c64k|64M|"
  "c2m|256M|-o cluster_size=2M"
  "r1|64M|-o refcount_bits=1"
  "r16|64M|-o refcount_bits=16"
  "r64|64M|-o refcount_bits=64"
  "v2|64M|-o compat=0.10"
  "ext-l2|64M|-o extended_l2=on"
  "lazy|64M|-o lazy_refcounts=on"
  "meta|64M|-o preallocation=metadata"
)
for entry in "${clean[@]}"; do
  IFS='|' read -r name size options <<<"$entry"
  rm -f img.qcow2
  # shellcheck disable=SC2086
  qemu-img create -q -f qcow2 $options img.qcow2 "$size"
  compare "$name (empty)" 0
  fill img.qcow2
  compare "$name" 0
  cp img.qcow2 "clean-$name.qcow2"
done
pass "clean images: ${#clean[@]} layouts, empty and written, same results as qemu-img check"

# compressed (zlib), internal snapshots, a backing file, a bitmap
qemu-img create -q -f raw src.raw 8M
qemu-io -f raw -c 'write -P 0x44 0 3M' -c 'write -P 0x55 5M 1M' src.raw >/dev/null
qemu-img convert -c -O qcow2 src.raw img.qcow2
compare "compressed" 0
qemu-io -c 'write -P 0x66 1M 128k' img.qcow2 >/dev/null
compare "compressed, partly overwritten" 0
cp img.qcow2 compressed.qcow2
qemu-img convert -c -O qcow2 -o compression_type=zstd,cluster_size=4k src.raw img.qcow2
compare "compressed (zstd, 4k clusters)" 0

qemu-img create -q -f qcow2 img.qcow2 64M
qemu-io -c 'write -P 1 0 2M' img.qcow2 >/dev/null
qemu-img snapshot -c first img.qcow2
qemu-io -c 'write -P 2 1M 2M' img.qcow2 >/dev/null
qemu-img snapshot -c second img.qcow2
qemu-io -c 'write -P 3 512k 64k' -c 'write -P 4 10M 64k' img.qcow2 >/dev/null
compare "2 snapshots" 0
cp img.qcow2 snapshots.qcow2

qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -c 'write -P 9 0 4M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b "$WORK/base.qcow2" -F qcow2 img.qcow2
qemu-io -c 'write -P 8 1M 64k' -c 'write -P 7 6M 32k' img.qcow2 >/dev/null
compare "backing file" 0

qemu-img create -q -f qcow2 img.qcow2 64M
qemu-io -c 'write -P 1 0 1M' img.qcow2 >/dev/null
qemu-img bitmap --add img.qcow2 b0
qemu-img bitmap --add -g 4M img.qcow2 b1
compare "bitmaps" 0
pass "clean images: compressed, snapshots, backing file, bitmaps"

# ---- leaks ------------------------------------------------------------------------------
for name in c512 c64k r1 r64 v2 ext-l2; do
  cp "clean-$name.qcow2" img.qcow2
  data_of img.qcow2 before.raw
  $PATCH img.qcow2 grow-leak
  if [ $name != r1 ]; then
    $PATCH img.qcow2 refadd 0 1                              # the header
    $PATCH img.qcow2 refadd "$($PATCH img.qcow2 reftable)" 1  # the refcount table
  fi
  compare "$name: leaks" 3
  compare "$name: leaks, -r leaks" 0 -r leaks
  data_of repaired.qcow2 after.raw
  cmp -s before.raw after.raw || fail "$name: repairing leaks changed the data"
  compare "$name: leaks, -r all" 0 -r all
  data_of repaired.qcow2 after.raw
  cmp -s before.raw after.raw || fail "$name: -r all on leaks changed the data"
  # A data cluster counted twice: a leak, and its COPIED flag is then wrong.
  [ $name = r1 ] && continue
  $PATCH img.qcow2 refadd "$($PATCH img.qcow2 host 0)" 1
  compare "$name: leaked data cluster" 2
  compare "$name: leaked data cluster, -r leaks" 0 -r leaks
  data_of repaired.qcow2 after.raw
  cmp -s before.raw after.raw || fail "$name: repairing a leaked data cluster changed the data"
done
cp snapshots.qcow2 img.qcow2
$PATCH img.qcow2 refadd "$($PATCH img.qcow2 host 0)" 1       # shared with the snapshots
compare "snapshots: leak" 3
compare "snapshots: leak, -r leaks" 0 -r leaks
$PATCH img.qcow2 refadd "$($PATCH img.qcow2 host 160)" 2     # the active image's own
compare "snapshots: leaks" 2
compare "snapshots: leaks, -r leaks" 0 -r leaks
pass "leaks: found, counted and repaired as qemu-img does; data unchanged"

# ---- corruptions ---------------------------------------------------------------------------
# A used cluster counted free: rebuilding the refcount structure is the only repair.
for name in c64k r1 r64 c512; do
  cp "clean-$name.qcow2" img.qcow2
  data_of img.qcow2 before.raw
  $PATCH img.qcow2 refset "$($PATCH img.qcow2 host 0)" 0
  compare "$name: refcount 0" 2
  compare "$name: refcount 0, -r leaks" 1 -r leaks
  compare "$name: refcount 0, -r all" 0 -r all
  data_of repaired.qcow2 after.raw
  cmp -s before.raw after.raw || fail "$name: rebuilding the refcounts changed the data"
done
# A refcount too low but not 0 (a cluster shared with snapshots): raised in place.
cp snapshots.qcow2 img.qcow2
$PATCH img.qcow2 refadd "$($PATCH img.qcow2 host 0)" -1
compare "snapshots: refcount too low" 2
compare "snapshots: refcount too low, -r leaks" 2 -r leaks
compare "snapshots: refcount too low, -r all" 0 -r all
# COPIED flag cleared on a data cluster; set on a shared one.
for name in c64k ext-l2 v2; do
  cp "clean-$name.qcow2" img.qcow2
  $PATCH img.qcow2 l2 0 xor 0x8000000000000000
  compare "$name: COPIED cleared" 2
  compare "$name: COPIED cleared, -r leaks" 0 -r leaks
  compare "$name: COPIED cleared, -r all" 0 -r all
done
cp snapshots.qcow2 img.qcow2
$PATCH img.qcow2 l2 0 xor 0x8000000000000000
compare "snapshots: COPIED on a shared cluster" 2
compare "snapshots: COPIED on a shared cluster, -r all" 0 -r all
# An unaligned data cluster cannot be repaired (qemu-img neither); an unaligned
# preallocated zero cluster becomes a plain zero cluster.
cp clean-c64k.qcow2 img.qcow2
$PATCH img.qcow2 l2 1 add 0x200
compare "unaligned data cluster" 2
compare "unaligned data cluster, -r all" 2 -r all
cp clean-c64k.qcow2 img.qcow2
$PATCH img.qcow2 l2 48 add 0x400  # guest 3M: written, then zeroed without unmapping
compare "unaligned preallocated zero cluster" 2
compare "unaligned preallocated zero cluster, -r all" 0 -r all
# Everything at once, and a compressed image with a leak and a COPIED flag.
cp clean-r16.qcow2 img.qcow2
$PATCH img.qcow2 refadd "$($PATCH img.qcow2 host 1)" 3
$PATCH img.qcow2 refset "$($PATCH img.qcow2 host 2)" 0
$PATCH img.qcow2 l2 3 xor 0x8000000000000000
$PATCH img.qcow2 l2 4 add 0x200
compare "several" 2
compare "several, -r leaks" 1 -r leaks
compare "several, -r all" 2 -r all
cp compressed.qcow2 img.qcow2
$PATCH img.qcow2 refadd 0 1
$PATCH img.qcow2 l2 16 xor 0x8000000000000000
compare "compressed: leak and COPIED" 2
compare "compressed: leak and COPIED, -r leaks" 0 -r leaks
pass "corruptions: found and repaired as qemu-img does (rebuild, raise, COPIED, unaligned)"

# ---- dirty images (lazy refcounts) ------------------------------------------------------------
cp clean-lazy.qcow2 img.qcow2
$PATCH img.qcow2 incompat-or 1
$PATCH img.qcow2 refadd "$($PATCH img.qcow2 host 0)" 1
$PATCH img.qcow2 refset "$($PATCH img.qcow2 host 16)" 0
compare "dirty" 2
compare "dirty, -r all" 0 -r all
[ "$(qemu-img info --output=json repaired.qcow2 | jq '.["dirty-flag"]')" = false ] ||
  fail "-r all leaves the dirty bit set"
cp clean-lazy.qcow2 img.qcow2
$PATCH img.qcow2 incompat-or 1
compare "dirty, consistent, -r leaks" 0 -r leaks
[ "$(qemu-img info --output=json repaired.qcow2 | jq '.["dirty-flag"]')" = false ] ||
  fail "-r leaks on a consistent dirty image leaves the dirty bit set"
# A real one: qemu-io writes with lazy refcounts and dies (abort) before the refcounts are written.
rm -f img.qcow2
qemu-img create -q -f qcow2 -o lazy_refcounts=on img.qcow2 64M
(qemu-io -c 'write -P 5 0 3M' -c flush -c 'write -P 6 8M 1M' -c abort img.qcow2 >/dev/null 2>&1) 2>/dev/null || true
[ "$(qemu-img info -U --output=json img.qcow2 | jq '.["dirty-flag"]')" = true ] || fail "qemu-io abort left a clean image"
data_of img.qcow2 before.raw
compare "lazy refcounts after a crash" 2
compare "lazy refcounts after a crash, -r leaks" 1 -r leaks
compare "lazy refcounts after a crash, -r all" 0 -r all
[ "$(qemu-img info --output=json repaired.qcow2 | jq '.["dirty-flag"]')" = false ] ||
  fail "-r all leaves the dirty bit set after a crash"
data_of repaired.qcow2 after.raw
cmp -s before.raw after.raw || fail "repairing the crashed lazy-refcounts image changed the data"
pass "dirty images (lazy refcounts, also after a crash): repaired and marked clean"

# ---- kill -9 of lunad mid-write ----------------------------------------------------------------
# Rounds until one leaves leaked clusters (most do; a clean one is compared too).
crash_round() { # seed
  local seed=$1 writer
  qemu-img create -q -f qcow2 -o cluster_size=4k crash.qcow2 64M
  port=$(free_port)
  luna_start --nbd "127.0.0.1:$port" --export "d=$WORK/crash.qcow2,format=qcow2"
  "$SYSTEM_PYTHON" "$(dirname "$0")/crash_writer.py" write "nbd://127.0.0.1:$port/d" "$WORK/log" "$seed" \
    >writer.out 2>&1 &
  writer=$!
  for _ in $(seq 1 200); do grep -qs flowing writer.out && break; sleep 0.05; done
  sleep "0.$(( (seed * 7919) % 300 + 100 ))"
  if [ "$seed" = 1 ]; then
    # Served read-write: both tools refuse to check it without -U (luna-img checks it with -U).
    qs=0 ls=0
    qemu-img check crash.qcow2 >/dev/null 2>q.err || qs=$?
    "$LUNA_IMG" check crash.qcow2 >/dev/null 2>l.err || ls=$?
    [ "$qs" = 1 ] && [ "$ls" = 1 ] || fail "a served image: check exited $ls (qemu-img $qs), expected 1"
    diff <(sed 's/^qemu-img: /luna-img: /' q.err) l.err >/dev/null || fail "lock messages differ: $(cat q.err l.err)"
    qs=0 ls=0
    qemu-img check -r leaks crash.qcow2 >/dev/null 2>q.err || qs=$?
    "$LUNA_IMG" check -r leaks crash.qcow2 >/dev/null 2>l.err || ls=$?
    [ "$qs" = 1 ] && [ "$ls" = 1 ] || fail "a served image: check -r leaks exited $ls (qemu-img $qs), expected 1"
    diff <(sed 's/^qemu-img: /luna-img: /' q.err) l.err >/dev/null || fail "lock messages differ: $(cat q.err l.err)"
    ls=0; "$LUNA_IMG" check -U crash.qcow2 >/dev/null 2>&1 || ls=$?
    [ "$ls" != 1 ] || fail "check -U of a served image did not complete"
  fi
  luna_crash "$WORK/crash.qcow2"
  wait "$writer" || true
  cp crash.qcow2 img.qcow2
  run_both
  [ "$qs" = 0 ] || [ "$qs" = 3 ] || fail "after kill -9 (seed $seed): qemu-img check exited $qs"
  compare "after kill -9 (seed $seed)" "$qs"
  data_of img.qcow2 before.raw
  compare "after kill -9 (seed $seed), -r leaks" 0 -r leaks
  data_of repaired.qcow2 after.raw
  cmp -s before.raw after.raw || fail "repairing the crashed image (seed $seed) changed the data"
  crash_status=$qs
}
crash_status=0
for seed in 1 2 3 4; do
  crash_round $seed
  [ "$crash_status" = 3 ] && break
done
pass "a live image is refused without -U; after kill -9 of lunad ($( [ "$crash_status" = 3 ] && echo "leaks, round $seed" || echo "clean in $seed rounds")) check and repair match qemu-img"

# A read-only export: checking is allowed, repairing is refused (as by qemu-img).
port=$(free_port)
luna_start --nbd "127.0.0.1:$port" --export "d=$WORK/clean-c64k.qcow2,format=qcow2,readonly=on"
"$LUNA_IMG" check clean-c64k.qcow2 >/dev/null || fail "checking an image served read-only"
qs=0 ls=0
qemu-img check -r all clean-c64k.qcow2 >/dev/null 2>q.err || qs=$?
"$LUNA_IMG" check -r all clean-c64k.qcow2 >/dev/null 2>l.err || ls=$?
[ "$qs" = 1 ] && [ "$ls" = 1 ] || fail "an image served read-only: check -r all exited $ls (qemu-img $qs), expected 1"
diff <(sed 's/^qemu-img: /luna-img: /' q.err) l.err >/dev/null || fail "lock messages differ: $(cat q.err l.err)"
luna_stop
pass "an image served read-only can be checked, not repaired"

# ---- other formats and errors ---------------------------------------------------------------------
qemu-img create -q -f raw img.raw 1M
s=0; "$LUNA_IMG" check img.raw 2>err || s=$?
[ $s = 63 ] && grep -q "luna-img: This image format does not support checks" err || fail "raw: exit $s, $(cat err)"
s=0; "$LUNA_IMG" check nonexistent.qcow2 2>err || s=$?
[ $s = 1 ] && grep -q "Could not open 'nonexistent.qcow2'" err || fail "missing image: exit $s"
s=0; "$LUNA_IMG" check -r some clean-c64k.qcow2 2>err || s=$?
[ $s = 1 ] && grep -q "Unknown option value for -r" err || fail "-r some: exit $s"
s=0; "$LUNA_IMG" check -q clean-c64k.qcow2 >out || s=$?
[ $s = 0 ] && [ ! -s out ] || fail "-q prints nothing"
"$LUNA_IMG" check --help | grep -q "usage: luna-img check" || fail "check --help"
pass "raw (exit 63), errors and -q"
