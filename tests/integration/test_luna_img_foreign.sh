#!/usr/bin/env bash
# Foreign formats as convert sources: vmdk (monolithicSparse, streamOptimized, zeroed grains),
# vdi (dynamic, static) and vpc (dynamic, fixed, current-size) images made by qemu-img from
# patterned sources with holes, of several sizes (odd ones, several grain tables).  For each:
# luna-img convert -O raw is byte-identical to qemu-img's and as sparse, convert -O qcow2 gives
# an image qemu-img compare calls identical and qemu-img check calls clean, the format is
# probed as qemu-img probes it, and luna-img info agrees with qemu-img info on format,
# virtual size and cluster size.  Then hostile images (bad magic, versions, sizes, tables
# pointing outside the file, corrupt compressed grains, checksums, differencing disks,
# descriptor files of other vmdk types): a clear message, exit 1, never a crash.
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img qemu-io
cd "$WORK"

# make_source NAME SIZE: data in scattered runs, a written run of zeroes, holes elsewhere.
make_source() {
  "$SYSTEM_PYTHON" - "$1" "$2" <<'PY'
import random, sys
name, size = sys.argv[1], int(sys.argv[2])
random.seed(size)
with open(name, "wb") as f:
    f.truncate(size)
    offset = 4096
    while offset < size:
        length = min(random.randrange(1, 300000), size - offset)
        f.seek(offset)
        f.write(random.randbytes(length) if random.random() < 0.8 else bytes(length))
        offset += length + random.randrange(200000, 9000000)
    f.seek(size - 1)
    f.write(b"\x5a")
PY
}

allocated_kib() { du -k "$1" | cut -f1; }

json_field() { "$SYSTEM_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], "-"))' "$@"; }

# check_image LABEL IMAGE [-f FMT]: the convert, info and probe checks against qemu-img.
check_image() {
  local label=$1 image=$2; shift 2
  local fmt_args=("$@")
  rm -f l.raw q.raw l.qcow2
  "$LUNA_IMG" convert "${fmt_args[@]}" -O raw "$image" l.raw || fail "$label: luna-img convert -O raw failed"
  qemu-img convert "${fmt_args[@]}" -O raw "$image" q.raw
  cmp l.raw q.raw || fail "$label: luna-img's raw differs from qemu-img's"
  local la qa
  la=$(allocated_kib l.raw) qa=$(allocated_kib q.raw)
  [ "$la" -le $((qa + 64)) ] || fail "$label: luna-img's raw has $la KiB allocated, qemu-img's $qa KiB"
  "$LUNA_IMG" convert "${fmt_args[@]}" -O qcow2 "$image" l.qcow2 || fail "$label: convert -O qcow2 failed"
  qemu-img compare "${fmt_args[@]}" -F qcow2 "$image" l.qcow2 >/dev/null ||
    fail "$label: qemu-img compare says the qcow2 copy differs"
  qemu-img check -q l.qcow2 || fail "$label: the qcow2 copy does not pass qemu-img check"
  "$LUNA_IMG" info "${fmt_args[@]}" --output=json "$image" >l.json || fail "$label: luna-img info failed"
  qemu-img info "${fmt_args[@]}" --output=json "$image" >q.json
  for key in format virtual-size cluster-size; do
    [ "$(json_field l.json "$key")" = "$(json_field q.json "$key")" ] ||
      fail "$label: info $key: luna-img $(json_field l.json "$key"), qemu-img $(json_field q.json "$key")"
  done
  pass "$label: raw identical ($la KiB allocated, qemu-img $qa KiB), qcow2 copy identical, info agrees"
}

sizes=(102400 1048576 5255225 73400320)
for size in "${sizes[@]}"; do
  make_source "src-$size.raw" "$size"
  for variant in "vmdk subformat=monolithicSparse" "vmdk subformat=streamOptimized" \
      "vmdk subformat=monolithicSparse,zeroed_grain=on" "vdi static=off" "vdi static=on" \
      "vpc subformat=dynamic" "vpc subformat=dynamic,force_size=on"; do
    read -r fmt options <<<"$variant"
    image="img-$size-$fmt-${options//[=,]/_}"
    qemu-img convert -q -f raw -O "$fmt" -o "$options" "src-$size.raw" "$image"
    check_image "$size bytes, $fmt $options" "$image"
  done
  qemu-img convert -q -f raw -O vpc -o subformat=fixed "src-$size.raw" "fixed-$size.vhd"
  check_image "$size bytes, vpc fixed (-f vpc)" "fixed-$size.vhd" -f vpc
done

# A fixed VHD has no magic at its start: like qemu-img, probing calls it raw.
"$LUNA_IMG" info --output=json fixed-1048576.vhd >l.json
[ "$(json_field l.json format)" = raw ] || fail "a fixed VHD was probed as $(json_field l.json format), not raw"
pass "a fixed VHD probes as raw, as with qemu-img"

# Zeroed grains written by qemu-io over data read as zeroes.
qemu-img create -q -f vmdk -o zeroed_grain=on zero.vmdk 8M
qemu-io -f vmdk -c 'write -P 7 0 3M' -c 'write -z 1M 1M' -c 'write -z 6M 64k' zero.vmdk >/dev/null
check_image "vmdk zeroed grains over data" zero.vmdk

# ---- hostile images ----

# patch FILE OFFSET HEX: overwrite bytes in place.
patch() { "$SYSTEM_PYTHON" -c '
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2], 0)); f.write(bytes.fromhex(sys.argv[3]))' "$@"; }

# vhd_fix_checksum FILE OFFSET: recompute the footer checksum of the footer at OFFSET.
vhd_fix_checksum() { "$SYSTEM_PYTHON" -c '
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2], 0)); footer = bytearray(f.read(512))
    footer[64:68] = bytes(4)
    f.seek(int(sys.argv[2], 0) + 64); f.write(((~sum(footer)) & 0xffffffff).to_bytes(4, "big"))' "$@"; }

# refused LABEL EXPECTED-TEXT IMAGE [-f FMT]: info and convert fail with the text, exit 1, no crash.
refused() {
  local label=$1 text=$2 image=$3; shift 3
  local status=0
  "$LUNA_IMG" convert "$@" -O raw "$image" out.raw >l.out 2>l.err || status=$?
  [ "$status" = 1 ] || { cat l.err; fail "$label: convert exited $status, expected 1"; }
  grep -qF -- "$text" l.err || fail "$label: convert said '$(cat l.err)', expected '$text'"
  status=0
  "$LUNA_IMG" info "$@" "$image" >l.out 2>l.err || status=$?
  [ "$status" = 1 ] || { cat l.err; fail "$label: info exited $status, expected 1"; }
  pass "$label: $(head -n 1 l.err)"
}

# Every variant from one small source, copied before each patch.
make_source small.raw 5255225
qemu-img convert -q -f raw -O vmdk small.raw s.vmdk
qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized small.raw stream.vmdk
qemu-img convert -q -f raw -O vdi small.raw s.vdi
qemu-img convert -q -f raw -O vpc small.raw s.vhd
fresh() { cp "$1" "$2"; }

fresh s.vmdk bad.vmdk; patch bad.vmdk 0 00000000
refused "vmdk with a bad magic" "Image not in VMDK format" bad.vmdk -f vmdk
fresh s.vmdk bad.vmdk; patch bad.vmdk 4 04000000
refused "vmdk version 4" "Unsupported VMDK version 4" bad.vmdk
fresh s.vmdk bad.vmdk; patch bad.vmdk 20 0000000001000000
refused "vmdk with a 2^40-sector grain" "Invalid granularity" bad.vmdk
fresh s.vmdk bad.vmdk; patch bad.vmdk 44 00100000
refused "vmdk with 4096 entries per grain table" "L2 table size too big" bad.vmdk
fresh s.vmdk bad.vmdk; patch bad.vmdk 12 ffffffffffff0000
refused "vmdk with an absurd capacity" "L1 size too big" bad.vmdk
fresh s.vmdk bad.vmdk; patch bad.vmdk 56 00ffffff00000000
refused "vmdk whose grain directory is past the end" "beyond the end of the file" bad.vmdk
gd=$("$SYSTEM_PYTHON" -c 'import struct,sys; d=open(sys.argv[1],"rb").read(64); print(struct.unpack_from("<Q",d,56)[0]*512)' s.vmdk)
fresh s.vmdk bad.vmdk; patch bad.vmdk "$gd" ffffff7f
refused "vmdk whose grain table is past the end" "points beyond the end of the file" bad.vmdk
# A grain table entry pointing past the end: the open succeeds, the read fails cleanly.
gt=$("$SYSTEM_PYTHON" -c 'import struct,sys; d=open(sys.argv[1],"rb").read(); print(struct.unpack_from("<I",d,int(sys.argv[2]))[0]*512)' s.vmdk "$gd")
fresh s.vmdk bad.vmdk; patch bad.vmdk "$((gt + 4))" ffffff7f
refused_read() {
  local label=$1 image=$2 status=0
  "$LUNA_IMG" convert -O raw "$image" out.raw >l.out 2>l.err || status=$?
  [ "$status" = 1 ] || { cat l.err; fail "$label: convert exited $status, expected 1"; }
  grep -q "error while reading\|Input/output error" l.err || fail "$label: convert said '$(cat l.err)'"
  pass "$label: $(head -n 1 l.err)"
}
refused_read "vmdk grain past the end of the file" bad.vmdk
# A compressed grain whose deflate stream is garbage.
grain=$("$SYSTEM_PYTHON" - stream.vmdk <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
# The first grain marker after the header: lba 0, then a size, then a zlib stream (0x78).
for at in range(512, len(data) - 16, 512):
    lba, size = struct.unpack_from("<QI", data, at)
    if size and data[at + 12] == 0x78:
        print(at + 12); break
PY
)
fresh stream.vmdk bad.vmdk; patch bad.vmdk "$grain" 0000000000000000000000000000
refused_read "vmdk compressed grain that does not inflate" bad.vmdk
fresh stream.vmdk bad.vmdk; patch bad.vmdk "$((grain - 4))" ffffff7f
refused_read "vmdk grain marker with an absurd size" bad.vmdk
# Descriptor files of layouts luna does not read are refused by name.
qemu-img create -q -f vmdk -o subformat=monolithicFlat flat.vmdk 1M
refused "vmdk monolithicFlat descriptor" "createType 'monolithicFlat' is not supported" flat.vmdk
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse split.vmdk 1M
refused "vmdk twoGbMaxExtentSparse descriptor" "createType 'twoGbMaxExtentSparse' is not supported" split.vmdk
head -c 700 s.vmdk >bad.vmdk
refused "vmdk truncated after the header" "File truncated, expecting at least" bad.vmdk

fresh s.vdi bad.vdi; patch bad.vdi 0x40 00000000
refused "vdi with a bad signature" "Image not in VDI format (bad signature 00000000)" bad.vdi -f vdi
fresh s.vdi bad.vdi; patch bad.vdi 0x44 00000100
refused "vdi version 1.0" "unsupported VDI image (version 1.0)" bad.vdi
fresh s.vdi bad.vdi; patch bad.vdi 0x154 01020000
refused "vdi with an unaligned block map" "unaligned block map offset 0x201" bad.vdi
fresh s.vdi bad.vdi; patch bad.vdi 0x178 00100000
refused "vdi with 4 KiB blocks" "block size 4096 is not 1048576" bad.vdi
fresh s.vdi bad.vdi; patch bad.vdi 0x172 70
refused "vdi larger than its block map" "image bitmap has room for" bad.vdi
fresh s.vdi bad.vdi; patch bad.vdi 0x1b8 01
refused "vdi with a parent" "non-NULL parent UUID" bad.vdi
fresh s.vdi bad.vdi; patch bad.vdi 0x180 ffffff3f; patch bad.vdi 0x170 0000000000100000
refused "vdi with a huge block map" "beyond the end of the file" bad.vdi
bmap=$("$SYSTEM_PYTHON" -c 'import struct,sys; d=open(sys.argv[1],"rb").read(512); print(struct.unpack_from("<I",d,0x154)[0])' s.vdi)
fresh s.vdi bad.vdi; patch bad.vdi "$bmap" 00ffff00
refused_read "vdi block past the end of the file" bad.vdi

fresh s.vhd bad.vhd; patch bad.vhd 70 ff
refused "vhd with a bad footer checksum" "Incorrect header checksum" bad.vhd
fresh s.vhd bad.vhd; patch bad.vhd 60 00000004; vhd_fix_checksum bad.vhd 0
refused "differencing vhd" "differencing VHD images are not supported" bad.vhd
dyn=$("$SYSTEM_PYTHON" -c 'import struct,sys; d=open(sys.argv[1],"rb").read(512); print(struct.unpack_from(">Q",d,16)[0])' s.vhd)
fresh s.vhd bad.vhd; patch bad.vhd "$((dyn + 32))" 00003000
refused "vhd with a block size not a power of two" "Invalid block size 12288" bad.vhd
fresh s.vhd bad.vhd; patch bad.vhd "$((dyn + 28))" 00000001
refused "vhd whose BAT is too small" "Page table too small" bad.vhd
bat=$("$SYSTEM_PYTHON" -c 'import struct,sys; d=open(sys.argv[1],"rb").read(); print(struct.unpack_from(">Q",d,int(sys.argv[2])+16)[0])' s.vhd "$dyn")
fresh s.vhd bad.vhd; patch bad.vhd "$bat" 00ffff00
refused "vhd block past the end of the file" "The image has been truncated" bad.vhd
fresh s.vhd bad.vhd; patch bad.vhd "$dyn" 0000000000000000
refused "vhd with a bad dynamic header" "Invalid header magic" bad.vhd
head -c 300 s.vhd >bad.vhd
refused "vhd shorter than a footer" "File too small for a VHD header" bad.vhd -f vpc

# Never written: the foreign formats are sources only.
status=0
"$LUNA_IMG" convert -O vmdk small.raw out.vmdk 2>l.err || status=$?
[ "$status" = 1 ] && grep -q "Unknown file format 'vmdk'" l.err || fail "convert -O vmdk: exit $status, $(cat l.err)"
pass "convert -O vmdk is refused: $(cat l.err)"
