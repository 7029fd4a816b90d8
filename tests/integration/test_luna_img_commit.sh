#!/usr/bin/env bash
# luna-img commit against qemu-img commit: backing chains made by qemu-img (raw and qcow2 bases,
# depth 2 and 3, v2 and v3 layers) and written by qemu-io at distinct offsets per layer (data and
# zero writes), committed by both tools on identical copies (plain, -d, -b).  The bases must read
# the same as each other and as the top did before, every qcow2 image must pass qemu-img check,
# and every layer must map as qemu-img leaves it (top emptied or not).  Shorter bases are grown;
# errors print qemu-img's messages and exit codes.  Layers above the base end byte-identical to
# qemu-img's (an emptied v3 top is reset to a new image's layout and its file cut, as QEMU's
# make_empty does).
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img qemu-io jq
cd "$WORK"

# ---- chains ----------------------------------------------------------------------------------
# make_chain DIR KIND: base.{raw|qcow2} <- mid.qcow2 [<- top.qcow2]; prints nothing.
# Layers write distinct patterns at distinct offsets; some writes overlap lower layers' data,
# zero writes cover data below them, one write is unaligned (copy-on-write in the layer).
make_chain() {
  local dir=$1 kind=$2 base_format=raw top_options=""
  mkdir -p "$dir"
  (
    cd "$dir"
    case $kind in
      qcow2-*) base_format=qcow2 ;;
    esac
    case $kind in
      *-v2) top_options="-o compat=0.10" ;;
      *-512) top_options="-o cluster_size=512" ;;
      *-extl2) top_options="-o extended_l2=on" ;;
    esac
    qemu-img create -q -f $base_format base.$base_format 8M
    qemu-io -f $base_format -c 'write -P 0xaa 0 8M' -c 'write -P 0xab 6M 1M' base.$base_format >/dev/null
    # shellcheck disable=SC2086
    qemu-img create -q -f qcow2 $top_options -b base.$base_format -F $base_format mid.qcow2
    qemu-io -c 'write -P 0x11 64k 64k' -c 'write -z 256k 64k' -c 'write -P 0x12 2M 1M' \
      -c 'write -z 5M 512k' mid.qcow2 >/dev/null
    case $kind in
      *-depth3*)
        # shellcheck disable=SC2086
        qemu-img create -q -f qcow2 $top_options -b mid.qcow2 -F qcow2 top.qcow2
        qemu-io -c 'write -P 0x22 128k 64k' -c 'write -z 512k 128k' -c 'write -P 0x23 1000k 10k' \
          -c 'write -z 2M 256k' -c 'write -P 0x24 5M 64k' -c 'write -P 0x25 7M 1M' top.qcow2 >/dev/null
        ;;
    esac
  )
}

top_of() { [ -f "$1/top.qcow2" ] && echo top.qcow2 || echo mid.qcow2; }
base_of() { [ -f "$1/base.qcow2" ] && echo base.qcow2 || echo base.raw; }

# layout IMAGE: what the image itself allocates (qemu-img map's depth-0 runs, without host
# offsets), runs of equal kind merged; whatever lies below is only "below" (lower layers may be
# allocated differently: qemu-img copies at 4 KiB granularity at least).
layout() {
  qemu-img map --output=json "$1" | jq -c 'map(del(.offset) | if .depth > 0 then {start, length, below: true}
    else . end) | reduce .[] as $e ([];
    if length > 0 and (.[-1] | del(.start, .length)) == ($e | del(.start, .length))
    then .[-1].length += $e.length else . + [$e] end)'
}

# data_of IMAGE OUT: the guest data as qemu-img reads it through the chain.
data_of() { qemu-img convert -U -O raw "$1" "$2"; }

# commit_both LABEL KIND ARGS...: build the chain, commit it with both tools (ARGS before the
# top's name), compare exit codes and stdout, then the layers.
commit_both() {
  local label=$1 kind=$2; shift 2
  rm -rf src q l
  make_chain src "$kind"
  cp -a src q
  cp -a src l
  local top base
  top=$(top_of src)
  base=$(base_of src)
  # The image committed into: -b's, else the top's backing file.
  [ "$top" = top.qcow2 ] && base=mid.qcow2
  local previous=""
  for arg in "$@"; do
    [ "$previous" = -b ] && base=$(basename "$arg")
    previous=$arg
  done
  data_of "src/$top" before.raw
  local qs=0 ls=0
  # @DIR@ in ARGS: the directory of the copy each tool works on.
  (cd q && qemu-img commit "${@//@DIR@/$WORK/q}" "$top" >out 2>err) || qs=$?
  (cd l && "$LUNA_IMG" commit "${@//@DIR@/$WORK/l}" "$top" >out 2>err) || ls=$?
  [ "$qs" = 0 ] || { cat q/err; fail "$label: qemu-img commit $* exited $qs"; }
  [ "$ls" = 0 ] || { cat l/err; fail "$label: luna-img commit $* exited $ls"; }
  diff q/out l/out >/dev/null || fail "$label: output differs: $(diff q/out l/out)"
  [ ! -s l/err ] || fail "$label: luna-img printed on stderr: $(cat l/err)"
  # The base holds what top read before, and the same as qemu-img's base.
  local base_format=${base##*.}
  qemu-img compare -q -f "$base_format" -F "$base_format" "q/$base" "l/$base" ||
    fail "$label: the bases differ after commit $*"
  qemu-img compare -q -f "$base_format" -F raw "l/$base" before.raw ||
    fail "$label: the base does not read as the top did before commit $*"
  # Every layer: clean; above the base, mapped as qemu-img leaves it and reading as qemu-img's.
  for image in l/*.qcow2; do
    local name=${image#l/}
    qemu-img check -q "$image" || fail "$label: qemu-img check finds $name unclean after commit $*"
    # The base maps as qemu-img leaves it too (zeroed clusters freed; a zeroed part of a cluster
    # whose rest reads as zeroes made a zero cluster), except with 512-byte layers: qemu-img
    # copies data in 4 KiB pieces at least, luna in the layers' clusters (the same content).
    if [ "$name" = "$base" ]; then
      case $kind in *-512) continue ;; esac
      diff <(layout "q/$name") <(layout "l/$name") >/dev/null ||
        fail "$label: the base $name maps differently after commit $*: $(diff <(layout "q/$name") <(layout "l/$name"))"
      continue
    fi
    diff <(layout "q/$name") <(layout "l/$name") >/dev/null ||
      fail "$label: $name maps differently after commit $*: $(diff <(layout "q/$name") <(layout "l/$name"))"
    qemu-img compare -q "q/$name" "l/$name" || fail "$label: $name reads differently after commit $*"
    diff <(cd q && qemu-img info "$name" | grep -v 'disk size') <(cd l && qemu-img info "$name" | grep -v 'disk size') \
      >/dev/null || fail "$label: $name's header differs after commit $*"
    # Byte for byte: an emptied v3 top is reset to a new image's layout and cut, as qemu-img does.
    cmp -s "q/$name" "l/$name" ||
      fail "$label: $name differs from qemu-img's after commit $* (sizes $(stat -c %s "q/$name" "l/$name" | paste -sd/))"
  done
  pass "$label: commit $*"
}

for kind in raw-depth2 qcow2-depth2 raw-depth3 qcow2-depth3 raw-depth3-v2 qcow2-depth3-512 raw-depth3-extl2; do
  commit_both "$kind" "$kind"
  commit_both "$kind" "$kind" -d
  commit_both "$kind" "$kind" -t none -q
done
# A top emptied by the commit must map as unallocated: a test of the test's expectations.
make_chain plain raw-depth3
(cd plain && "$LUNA_IMG" commit -q top.qcow2)
qemu-img map --output=json plain/top.qcow2 | grep -q '"depth": 0' &&
  fail "the top still holds clusters after commit without -d"
rm -rf plain
# -b: deeper than the first backing file (and naming the first one): implies -d.
commit_both "-b base" raw-depth3 -b base.raw
commit_both "-b base" qcow2-depth3 -b base.qcow2
commit_both "-b mid" raw-depth3 -b mid.qcow2
commit_both "-b base v2" raw-depth3-v2 -b base.raw
commit_both "-b absolute" qcow2-depth3 -b @DIR@/base.qcow2

# ---- a top with compressed clusters and a v3 top with an internal snapshot ------------------------
rm -rf src q l
make_chain src raw-depth2
qemu-img convert -q -c -O qcow2 -B base.raw -F raw src/mid.qcow2 src/compressed.qcow2
(cd src && mv compressed.qcow2 mid.qcow2)
qemu-img map --output=json src/mid.qcow2 | grep -q '"depth": 0' || fail "the compressed top holds nothing"
cp -a src q; cp -a src l
data_of src/mid.qcow2 before.raw
(cd q && qemu-img commit -q mid.qcow2) && (cd l && "$LUNA_IMG" commit -q mid.qcow2) || fail "compressed: commit failed"
qemu-img compare -q -f raw -F raw l/base.raw before.raw || fail "compressed: the base does not read as the top did"
cmp q/base.raw l/base.raw || fail "compressed: the bases differ"
qemu-img check -q l/mid.qcow2 || fail "compressed: the emptied top is not clean"
cmp -s q/mid.qcow2 l/mid.qcow2 || fail "compressed: the emptied top differs from qemu-img's"
pass "commit of compressed clusters"

rm -rf src q l
make_chain src qcow2-depth3
qemu-img snapshot -c snap1 src/top.qcow2
qemu-io -c 'write -P 0x77 3M 128k' src/top.qcow2 >/dev/null
cp -a src q; cp -a src l
data_of src/top.qcow2 before.raw
(cd q && qemu-img commit -q top.qcow2) && (cd l && "$LUNA_IMG" commit -q top.qcow2) || fail "snapshot: commit failed"
qemu-img compare -q l/mid.qcow2 before.raw || fail "snapshot: the backing file does not read as the top did"
qemu-img check -q l/top.qcow2 || fail "snapshot: the emptied top is not clean"
diff <(layout q/top.qcow2) <(layout l/top.qcow2) >/dev/null ||
  fail "snapshot: the top maps differently"
qemu-img snapshot -l l/top.qcow2 | grep -q snap1 || fail "snapshot: the snapshot is gone"
pass "commit of a top with an internal snapshot"

# ---- bases shorter than the top are grown ----------------------------------------------------
for base_kind in raw qcow2 qcow2-512; do
  rm -rf q l
  mkdir q
  (
    cd q
    format=${base_kind%%-*} options=""
    [ "$base_kind" = qcow2-512 ] && options="-o cluster_size=512"
    # shellcheck disable=SC2086
    qemu-img create -q -f "$format" $options small.$format 1M
    qemu-io -f "$format" -c 'write -P 0x31 0 1M' small.$format >/dev/null
    qemu-img create -q -f qcow2 -b small.$format -F "$format" big.qcow2 6M
    qemu-io -c 'write -P 0x44 5M 64k' -c 'write -P 0x45 512k 4k' big.qcow2 >/dev/null
  )
  cp -a q l
  format=${base_kind%%-*}
  data_of q/big.qcow2 before.raw
  (cd q && qemu-img commit -q big.qcow2) || fail "$base_kind: qemu-img commit failed"
  (cd l && "$LUNA_IMG" commit -q big.qcow2) || fail "$base_kind: luna-img commit failed"
  [ "$(qemu-img info --output=json l/small.$format | jq '."virtual-size"')" = 6291456 ] ||
    fail "$base_kind: the base was not grown to the top's size"
  qemu-img compare -q -f "$format" -F raw l/small.$format before.raw || fail "$base_kind: grown base reads wrong"
  qemu-img compare -q -f "$format" -F "$format" q/small.$format l/small.$format || fail "$base_kind: bases differ"
  [ "$format" = raw ] || qemu-img check -q l/small.$format || fail "$base_kind: the grown base is not clean"
  pass "a shorter $base_kind base is grown"
done

# ---- progress and quiet ----------------------------------------------------------------------
rm -rf l
make_chain l raw-depth3
(cd l && "$LUNA_IMG" commit -p -d top.qcow2 >out)
head -c 16 l/out | grep -qF '    (0.00/100%)' || fail "-p: does not start at 0%: $(od -c l/out | head -3)"
tail -c 35 l/out | grep -qF "$(printf '    (100.00/100%%)\r\nImage committed.')" ||
  fail "-p: does not end as qemu-img's: $(od -c l/out | tail -3)"
(cd l && "$LUNA_IMG" commit -q -p top.qcow2 >out)
[ ! -s l/out ] || fail "-q: output $(cat l/out)"
pass "-p and -q"

# ---- errors: qemu-img's messages and exit codes ---------------------------------------------------
rm -rf src q l
make_chain src raw-depth3
cp -a src q; cp -a src l
errors=(
  "-b nothere top.qcow2"
  "-b top.qcow2 top.qcow2"
  "-f raw base.raw"
  "nonexistent.qcow2"
  ""
  "-f foo top.qcow2"
  "-r xyz top.qcow2"
  "-t bogus top.qcow2"
  "top.qcow2 mid.qcow2"
  "--bogus top.qcow2"
)
for args in "${errors[@]}"; do
  qs=0 ls=0
  # shellcheck disable=SC2086
  (cd q && qemu-img commit $args >out 2>err) || qs=$?
  # shellcheck disable=SC2086
  (cd l && "$LUNA_IMG" commit $args >out 2>err) || ls=$?
  [ "$qs" = 1 ] || fail "commit $args: qemu-img exited $qs, the test expects 1"
  [ "$ls" = "$qs" ] || fail "commit $args: luna-img exited $ls, qemu-img $qs"
  diff <(sed 's/qemu-img/luna-img/g' q/err) l/err >/dev/null ||
    fail "commit $args: messages differ: $(diff <(sed 's/qemu-img/luna-img/g' q/err) l/err)"
done
for image in base.raw mid.qcow2 top.qcow2; do
  cmp "src/$image" "l/$image" || fail "a failed commit changed $image"
done
pass "${#errors[@]} error cases"
