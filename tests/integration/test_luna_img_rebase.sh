#!/usr/bin/env bash
# luna-img rebase against qemu-img rebase on identical copies of chains made by qemu-img and
# written by qemu-io: safe rebases onto another file, onto a file further down the chain, onto a
# qcow2 image and onto nothing (-b "") must leave the image reading as before (qemu-img compare
# with the original), clean (qemu-img check), allocated as qemu-img allocates it and with the
# same header; -u rewrites the header only (qemu-img info), even when the old backing file is
# gone; errors print qemu-img's messages and exit codes.
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img qemu-io jq
cd "$WORK"

# make_chain DIR TOP_OPTIONS: base.raw <- mid.qcow2 <- top.qcow2, plus other.raw (shorter than the
# top, with data where the chain has some and where it has none) and other.qcow2.
make_chain() {
  local dir=$1 options=$2
  mkdir -p "$dir"
  (
    cd "$dir"
    qemu-img create -q -f raw base.raw 4M
    qemu-io -f raw -c 'write -P 0xaa 0 3M' base.raw >/dev/null
    # shellcheck disable=SC2086
    qemu-img create -q -f qcow2 $options -b base.raw -F raw mid.qcow2
    qemu-io -c 'write -P 0x11 64k 64k' -c 'write -z 256k 64k' -c 'write -P 0x12 3M 64k' mid.qcow2 >/dev/null
    # shellcheck disable=SC2086
    qemu-img create -q -f qcow2 $options -b mid.qcow2 -F qcow2 top.qcow2
    qemu-io -c 'write -P 0x22 128k 64k' -c 'write -z 512k 128k' -c 'write -P 0x33 1000k 10k' top.qcow2 >/dev/null
    qemu-img create -q -f raw other.raw 2M
    qemu-io -f raw -c 'write -P 0x55 0 1M' -c 'write -P 0xaa 1536k 64k' other.raw >/dev/null
    qemu-img create -q -f qcow2 other.qcow2 4M
    qemu-io -c 'write -P 0xaa 0 2M' -c 'write -P 0x66 3M 512' other.qcow2 >/dev/null
    cp top.qcow2 orig.qcow2
  )
}

# layout IMAGE: qemu-img map without host offsets, runs of equal kind merged: which guest ranges
# are allocated and how, whatever host clusters the allocator picked.
layout() {
  qemu-img map --output=json "$1" | jq -c 'map(del(.offset)) | reduce .[] as $e ([];
    if length > 0 and (.[-1] | del(.start, .length)) == ($e | del(.start, .length))
    then .[-1].length += $e.length else . + [$e] end) | .[]'
}

# rebase_both LABEL TOP_OPTIONS ARGS...: rebase top.qcow2 of identical chains with both tools.
rebase_both() {
  local label=$1 options=$2; shift 2
  rm -rf q l
  # Each its own chain (cp would turn written zeroes into holes in one copy only).
  make_chain q "$options"
  make_chain l "$options"
  local qs=0 ls=0
  (cd q && qemu-img rebase "$@" top.qcow2 >out 2>err) || qs=$?
  (cd l && "$LUNA_IMG" rebase "$@" top.qcow2 >out 2>err) || ls=$?
  [ "$qs" = 0 ] || { cat q/err; fail "$label: qemu-img rebase $* exited $qs"; }
  [ "$ls" = 0 ] || { cat l/err; fail "$label: luna-img rebase $* exited $ls"; }
  diff q/out l/out >/dev/null || fail "$label: output differs: $(diff q/out l/out)"
  [ ! -s l/err ] || fail "$label: luna-img printed on stderr: $(cat l/err)"
  # The image reads as before (through its old chain, orig.qcow2), as qemu-img's does.
  (cd l && qemu-img compare -q top.qcow2 orig.qcow2) || fail "$label: rebase $* changed what the image reads"
  (cd q && qemu-img compare -q top.qcow2 orig.qcow2) || fail "$label: qemu-img's rebase $* changed the image"
  qemu-img check -q l/top.qcow2 || fail "$label: qemu-img check finds the image unclean after rebase $*"
  diff <(cd q && qemu-img info top.qcow2 | grep -v 'disk size') <(cd l && qemu-img info top.qcow2 |
    grep -v 'disk size') >/dev/null || fail "$label: headers differ after rebase $*: $(diff \
    <(cd q && qemu-img info top.qcow2) <(cd l && qemu-img info top.qcow2))"
  diff <(layout q/top.qcow2) <(layout l/top.qcow2) >/dev/null ||
    fail "$label: allocation differs after rebase $*: $(diff <(layout q/top.qcow2) <(layout l/top.qcow2))"
  pass "$label: rebase $*"
}

for variant in "v3|" "v2|-o compat=0.10" "512|-o cluster_size=512" "extl2|-o extended_l2=on"; do
  IFS='|' read -r name options <<<"$variant"
  rebase_both "$name other" "$options" -b other.raw -F raw
  rebase_both "$name down the chain" "$options" -b base.raw -F raw
  rebase_both "$name qcow2" "$options" -b other.qcow2 -F qcow2
  rebase_both "$name flatten" "$options" -b ""
  rebase_both "$name same" "$options" -b mid.qcow2 -F qcow2
done
# -p: qemu-img's progress steps follow its own walk; the first and last lines are the same.
rm -rf l
make_chain l ""
(cd l && "$LUNA_IMG" rebase -p -b other.raw -F raw top.qcow2 >out) || fail "-p: rebase failed"
head -c 16 l/out | grep -qF '    (0.00/100%)' || fail "-p: does not start at 0%: $(od -c l/out | head -3)"
cmp -s <(tail -c 19 l/out) <(printf '    (100.00/100%%)\r\n') || fail "-p: does not end at 100%: $(od -c l/out | tail -3)"
pass "-p"
rebase_both "quiet" "" -q -p -b "" -t none -T none

# The safe rebase really copied: over the new backing file alone, the image still reads as before.
rm -rf l
make_chain l ""
(cd l && "$LUNA_IMG" rebase -b other.raw -F raw top.qcow2) || fail "rebase onto other.raw failed"
(cd l && qemu-img compare -q top.qcow2 orig.qcow2 && qemu-img info top.qcow2 | grep -q '^backing file: other.raw$') ||
  fail "the image does not read as before over other.raw"
rm l/base.raw l/mid.qcow2
(cd l && qemu-img compare -q -U top.qcow2 -F raw other.raw) && fail "the test cannot tell the image from other.raw"
pass "the rebased image stands on other.raw alone"

# An image without a backing file: the new backing file's data is hidden by zeroes.
rm -rf q l
mkdir q
(cd q && qemu-img create -q -f qcow2 alone.qcow2 4M && qemu-io -c 'write -P 0x66 3M 64k' alone.qcow2 >/dev/null &&
  qemu-img create -q -f raw other.raw 2M && qemu-io -f raw -c 'write -P 0x55 0 1M' other.raw >/dev/null &&
  cp alone.qcow2 orig.qcow2)
cp -a q l
(cd q && qemu-img rebase -b other.raw -F raw alone.qcow2) || fail "qemu-img rebase of an image without backing failed"
(cd l && "$LUNA_IMG" rebase -b other.raw -F raw alone.qcow2) || fail "luna-img rebase of an image without backing failed"
(cd l && qemu-img compare -q alone.qcow2 orig.qcow2) || fail "no backing: the image changed"
diff <(layout q/alone.qcow2) <(layout l/alone.qcow2) >/dev/null ||
  fail "no backing: allocation differs"
qemu-img check -q l/alone.qcow2 || fail "no backing: not clean"
pass "rebase of an image without a backing file"

# ---- -u: the header only -----------------------------------------------------------------------
rm -rf l
make_chain l ""
(cd l && "$LUNA_IMG" rebase -u -b other.raw -F raw top.qcow2) || fail "-u failed"
info=$(cd l && qemu-img info --output=json top.qcow2)
[ "$(jq -r '."backing-filename"' <<<"$info")" = other.raw ] || fail "-u: backing file is not other.raw: $info"
[ "$(jq -r '."backing-filename-format"' <<<"$info")" = raw ] || fail "-u: backing format is not raw: $info"
cmp -s <(tail -c +65537 l/orig.qcow2) <(tail -c +65537 l/top.qcow2) || fail "-u: more than the header cluster changed"
cmp -s l/orig.qcow2 l/top.qcow2 && fail "-u: nothing changed"
qemu-img check -q l/top.qcow2 || fail "-u: not clean"
# The old backing file gone (what -u is for): still possible, and -b "" removes the name.
rm l/mid.qcow2
(cd l && "$LUNA_IMG" rebase -u -b mid2.qcow2 -F qcow2 orig.qcow2) || fail "-u without the old backing file failed"
[ "$(qemu-img info --output=json -U l/orig.qcow2 | jq -r '."backing-filename"')" = mid2.qcow2 ] ||
  fail "-u: the name was not changed to mid2.qcow2"
(cd l && "$LUNA_IMG" rebase -u -b "" orig.qcow2) || fail "-u -b \"\" failed"
[ "$(qemu-img info --output=json l/orig.qcow2 | jq -r '."backing-filename" // "none"')" = none ] ||
  fail "-u -b \"\": the backing file is still named"
qemu-img check -q l/orig.qcow2 || fail "-u -b \"\": not clean"
pass "-u rewrites the header only"

# ---- errors: qemu-img's messages and exit codes ------------------------------------------------
rm -rf q l
make_chain q ""
cp -a q l
errors=(
  "-b other.raw top.qcow2"
  "-u -b other.raw top.qcow2"
  "-b nothere.raw -F raw top.qcow2"
  "top.qcow2"
  "-b x"
  "-b x -F foo top.qcow2"
  "-f raw -b \"\" -F raw base.raw"
  "-f raw -b other.raw -F raw base.raw"
  "-b other.raw -F qcow2 top.qcow2"
  "-f qcow2 -b \"\" base.raw"
  "-b \"\" -f foo top.qcow2"
  "-b \"\" nothere.qcow2"
  "-t bogus -b \"\" top.qcow2"
  "-T bogus -b \"\" top.qcow2"
  "--bogus top.qcow2"
)
for args in "${errors[@]}"; do
  qs=0 ls=0
  (cd q && eval qemu-img rebase "$args" >out 2>err) || qs=$?
  (cd l && eval "\"$LUNA_IMG\"" rebase "$args" >out 2>err) || ls=$?
  [ "$qs" = 1 ] || fail "rebase $args: qemu-img exited $qs, the test expects 1"
  [ "$ls" = "$qs" ] || fail "rebase $args: luna-img exited $ls, qemu-img $qs"
  diff <(sed 's/qemu-img/luna-img/g' q/err) l/err >/dev/null ||
    fail "rebase $args: messages differ: $(diff <(sed 's/qemu-img/luna-img/g' q/err) l/err)"
  cmp l/top.qcow2 l/orig.qcow2 || fail "rebase $args changed the image"
done
pass "${#errors[@]} error cases"
