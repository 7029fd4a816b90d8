#!/usr/bin/env bash
# luna-img against qemu-img: images luna-img creates pass `qemu-img check`
# and are byte-identical to qemu-img's (qemu 7.2); `luna-img info` agrees with
# `qemu-img info` field by field (JSON, via jq) and line by line (human) on
# images either tool created; error cases exit 1 with a message.
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img jq
same_layout=0
qemu-img --version | grep -q 'version 7\.2\.' && same_layout=1
cd "$WORK"

# Every field both tools print must agree; qemu-img may print fields luna-img does not know.
compare_info() {
  local image=$1 label=$2 q l
  q=$(qemu-img info --output=json "$image") || fail "$label: qemu-img info failed"
  l=$("$LUNA_IMG" info --output=json "$image") || fail "$label: luna-img info failed"
  local differing
  differing=$(jq -n --argjson q "$q" --argjson l "$l" -r '
    def name: map(tostring) | join(".");
    ([$l | paths(type != "object" and type != "array")] | map(select(. as $p | ($q | getpath($p)) != ($l | getpath($p)))) | map("differs: " + name)) +
    ([$q | paths(type != "object" and type != "array")] | map(select(. as $p | ($l | getpath($p)) == null)) | map("missing: " + name))
    | .[]' 2>&1)
  [ -z "$differing" ] || fail "$label: luna-img info differs from qemu-img info: $differing"
  diff <(qemu-img info "$image") <("$LUNA_IMG" info "$image") >/dev/null ||
    fail "$label: human output differs: $(diff <(qemu-img info "$image") <("$LUNA_IMG" info "$image"))"
}

qemu-img create -q -f qcow2 base.qcow2 64M
qemu-img create -q -f raw base.raw 32M

# name | size | options
matrix=(
  "default|1G|"
  "v2|1G|-o compat=0.10"
  "v2-word|1G|-o compat=v2"
  "v3-word|1G|-o compat=v3,lazy_refcounts=on"
  "c512|1G|-o cluster_size=512"
  "c1k-r64|5G|-o cluster_size=1k,refcount_bits=64"
  "c2m|3G|-o cluster_size=2M"
  "r1|1G|-o refcount_bits=1"
  "r2|1G|-o refcount_bits=2"
  "r4|1G|-o refcount_bits=4"
  "r8|1G|-o refcount_bits=8"
  "r32|1G|-o refcount_bits=32"
  "r64|1G|-o refcount_bits=64"
  "ext-l2|1G|-o extended_l2=on"
  "zstd|1G|-o compression_type=zstd"
  "all-v3|1G|-o extended_l2=on,compression_type=zstd,lazy_refcounts=on,cluster_size=32k"
  "10g|10G|"
  "2t|2T|"
  "zero|0|"
  "odd|1000000|"
  "meta|1G|-o preallocation=metadata"
  "meta-10g|10G|-o preallocation=metadata"
  "meta-c512|16M|-o preallocation=metadata,cluster_size=512"
  "meta-c512-r1|16M|-o preallocation=metadata,cluster_size=512,refcount_bits=1"
  "meta-c512-r64|8M|-o preallocation=metadata,cluster_size=512,refcount_bits=64"
  "falloc|64M|-o preallocation=falloc"
  "full|64M|-o preallocation=full"
  "full-c512|8M|-o preallocation=full,cluster_size=512"
  "full-v2|32M|-o preallocation=full,compat=0.10"
  "backing||-b base.qcow2 -F qcow2"
  "backing-raw||-b base.raw -F raw"
  "backing-size|2G|-b base.qcow2 -F qcow2"
  "backing-c512||-b base.qcow2 -F qcow2 -o cluster_size=512"
  "backing-v2||-b base.raw -F raw -o compat=0.10"
  "backing-opt||-o backing_file=base.qcow2,backing_fmt=qcow2"
  "backing-unsafe|1G|-u -b later.qcow2 -F qcow2"
  "backing-prealloc||-b base.qcow2 -F qcow2 -o extended_l2=on,preallocation=metadata"
)
for entry in "${matrix[@]}"; do
  IFS='|' read -r name size options <<<"$entry"
  # shellcheck disable=SC2086
  q_out=$(qemu-img create -f qcow2 $options "q-$name.qcow2" $size) || fail "$name: qemu-img create failed"
  # shellcheck disable=SC2086
  l_out=$("$LUNA_IMG" create -f qcow2 $options "l-$name.qcow2" $size) || fail "$name: luna-img create failed"
  [ "${q_out//q-$name/l-$name}" = "$l_out" ] || fail "$name: Formatting line differs: '$q_out' vs '$l_out'"
  # -u does not open the backing file: it may be created afterwards (check needs it).
  [ "$name" = backing-unsafe ] && qemu-img create -q -f qcow2 later.qcow2 1G
  qemu-img check -q "l-$name.qcow2" || fail "$name: qemu-img check found problems"
  if [ $same_layout = 1 ]; then
    cmp -s "q-$name.qcow2" "l-$name.qcow2" || fail "$name: image differs from qemu-img's: $(cmp "q-$name.qcow2" "l-$name.qcow2" | head -1)"
  fi
  compare_info "l-$name.qcow2" "$name (luna-img's)"
  compare_info "q-$name.qcow2" "$name (qemu-img's)"
done
pass "luna-img create: ${#matrix[@]} qcow2 variants pass qemu-img check and match qemu-img"

# raw
for prealloc in off falloc full; do
  "$LUNA_IMG" create -q -f raw -o preallocation=$prealloc "l-$prealloc.raw" 10M
  qemu-img create -q -f raw -o preallocation=$prealloc "q-$prealloc.raw" 10M
  [ "$(stat -c %s "l-$prealloc.raw")" = 10485760 ] || fail "raw $prealloc: wrong size"
  cmp -s "l-$prealloc.raw" "q-$prealloc.raw" || fail "raw $prealloc: differs from qemu-img's"
  compare_info "l-$prealloc.raw" "raw $prealloc"
done
"$LUNA_IMG" create -q l-default.raw 1000 && [ "$(stat -c %s l-default.raw)" = 1024 ] || fail "raw: sizes round up to sectors"
pass "luna-img create -f raw"

# info on images made by qemu-img that luna-img did not create: snapshots, dirty bits, chains
qemu-img create -q -f qcow2 snap.qcow2 64M
qemu-img snapshot -c first snap.qcow2
qemu-img snapshot -c second-snapshot snap.qcow2
compare_info snap.qcow2 "snapshots"
mkdir -p sub
qemu-img create -q -f qcow2 sub/base.qcow2 64M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 sub/mid.qcow2
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 sub/top.qcow2
compare_info sub/top.qcow2 "relative backing path"
diff <(qemu-img info --backing-chain --output=json sub/top.qcow2 | jq -S 'map(del(.["format-specific"].data.bitmaps))') \
     <("$LUNA_IMG" info --backing-chain --output=json sub/top.qcow2 | jq -S .) ||
  fail "--backing-chain JSON differs"
diff <(qemu-img info --backing-chain sub/top.qcow2) <("$LUNA_IMG" info --backing-chain sub/top.qcow2) ||
  fail "--backing-chain human output differs"
compare_info base.raw "raw"
[ "$("$LUNA_IMG" info -f raw --output=json base.qcow2 | jq -r .format)" = raw ] || fail "-f raw is not honoured"
"$LUNA_IMG" info -U base.qcow2 >/dev/null || fail "-U is accepted"
pass "luna-img info matches qemu-img info"

# errors: exit 1 and a message naming the problem
expect_error() {
  local pattern=$1; shift
  local out status=0
  out=$("$LUNA_IMG" "$@" 2>&1) || status=$?
  [ $status = 1 ] || fail "'luna-img $*' exited $status, expected 1 (output: $out)"
  grep -q -- "$pattern" <<<"$out" || fail "'luna-img $*': expected '$pattern' in: $out"
}
expect_error "luna-img: e.qcow2: Cluster size must be a power of two" create -f qcow2 -o cluster_size=1000 e.qcow2 1G
expect_error "Cluster size must be a power of two" create -f qcow2 -o cluster_size=4M e.qcow2 1G
expect_error "Extended L2 entries are only supported with cluster sizes of at least 16384" \
  create -f qcow2 -o extended_l2=on,cluster_size=4k e.qcow2 1G
expect_error "Different refcount widths than 16 bits require compatibility level 1.1" \
  create -f qcow2 -o compat=0.10,refcount_bits=32 e.qcow2 1G
expect_error "Refcount width must be a power of two" create -f qcow2 -o refcount_bits=3 e.qcow2 1G
expect_error "Lazy refcounts only supported with compatibility level 1.1" \
  create -f qcow2 -o compat=0.10,lazy_refcounts=on e.qcow2 1G
expect_error "luna-img: e.qcow2: Image creation needs a size parameter" create -f qcow2 e.qcow2
expect_error "Image creation needs a size parameter" create e.raw
expect_error "Invalid image size specified" create -f qcow2 e.qcow2 12x
expect_error "Invalid parameter 'foo'" create -f qcow2 -o foo=bar e.qcow2 1G
expect_error "Parameter 'preallocation' does not accept value 'bogus'" create -f qcow2 -o preallocation=bogus e.qcow2 1G
expect_error "The image size is too large for file format 'qcow2'" create -f qcow2 -o cluster_size=512 e.qcow2 2T
expect_error "Backing file specified without backing format" create -f qcow2 -b base.qcow2 e.qcow2
expect_error "Could not open 'missing.qcow2'" create -f qcow2 -b missing.qcow2 -F qcow2 e.qcow2
expect_error "Backing file and preallocation" create -f qcow2 -b base.qcow2 -F qcow2 -o preallocation=metadata e.qcow2
expect_error "Unknown file format 'vmdk'" create -f vmdk e.img 1G
expect_error "Could not open 'nonexistent.img'" info nonexistent.img
expect_error "--output must be used with human or json" info --output=xml base.qcow2
expect_error "Command not found: frobnicate" frobnicate
expect_error "Not enough arguments"
pass "error cases exit 1 with qemu-img's messages"

# help and version
"$LUNA_IMG" --help | grep -q "create" || fail "--help lists the verbs"
"$LUNA_IMG" --version | grep -q "luna-img version" || fail "--version"
"$LUNA_IMG" create --help | grep -q "usage: luna-img create" || fail "create --help"
"$LUNA_IMG" info --help | grep -q "usage: luna-img info" || fail "info --help"
"$LUNA_IMG" create -f qcow2 -o help | grep -q "refcount_bits=<num>" || fail "-o help"
pass "help and version"
