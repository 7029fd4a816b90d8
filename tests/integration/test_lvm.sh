#!/usr/bin/env bash
# LVM volumes read from their PVs in user space (format=lvm, lvm_devices=): a volume group
# built by lvm2's own tools (--driverloaded n, on loop devices over two image files, in a
# private LVM_SYSTEM_DIR so the host's LVM state is never touched) with linear, striped
# (2 PVs, 64 KiB stripes), two-segment and read-only LVs.  Data written through lunad
# (libnbd) lands at the offsets `lvs -o seg_pe_ranges` and `pvs -o pe_start` report, read
# straight from the PV files; a qcow2 image inside an LV is served as qcow2; the read-only
# LV is served read-only; a new LV created under a running lunad leaves writes alone, an
# lvextend of the served LV makes later writes fail (after the flush that re-reads the
# metadata); an unknown LV and a missing PV are refused with clear messages.
source "$(dirname "$0")/lib.sh"

for tool in pvcreate vgcreate lvcreate lvextend lvs pvs losetup qemu-img; do
  command -v "$tool" >/dev/null || fail "$tool is missing (deploy/install-deps.sh installs lvm2)"
done
cd "$WORK"

# A private lvm configuration: no udev, no locking, no backups, only our devices.
mkdir lvm-etc
cat >lvm-etc/lvm.conf <<'EOF'
devices { obtain_device_list_from_udev = 0 external_device_info_source = "none" }
global { use_lvmlockd = 0 event_activation = 0 }
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
backup { backup = 0 archive = 0 }
EOF
export LVM_SYSTEM_DIR=$WORK/lvm-etc
truncate -s 64M pv1.img pv2.img
LOOPS=()
detach() { for loop in "${LOOPS[@]}"; do losetup -d "$loop" 2>/dev/null || true; done; LOOPS=(); }
trap 'status=$?; detach; _luna_cleanup "$status"' EXIT
attach() {
  LOOPS=("$(losetup -f --show pv1.img)" "$(losetup -f --show pv2.img)") ||
    fail "losetup cannot attach the PV files (loop devices are needed to build the VG with lvm2)"
}
lvm_run() { "$1" --driverloaded n --nolocking --devices "${LOOPS[0]},${LOOPS[1]}" "${@:2}" 2>&1 |
  grep -v "WARNING\|leaked on" || true; }

VG=lunatest$$
attach
lvm_run pvcreate "${LOOPS[@]}" >/dev/null
lvm_run vgcreate -s 1M "$VG" "${LOOPS[@]}" >/dev/null
lvm_run lvcreate -an -Zn -L 8M -n lin "$VG" "${LOOPS[0]}" >/dev/null
lvm_run lvcreate -an -Zn -i 2 -I 64k -L 16M -n str "$VG" >/dev/null
lvm_run lvcreate -an -Zn -L 4M -n multi "$VG" "${LOOPS[1]}" >/dev/null
lvm_run lvextend -L +4M "$VG/multi" "${LOOPS[0]}" >/dev/null
lvm_run lvcreate -an -Zn -pr -L 4M -n ro "$VG" >/dev/null
lvm_run lvcreate -an -Zn -L 12M -n image "$VG" >/dev/null
# Where lvm says each segment lives: "lv;pv:first-last[ pv:first-last]" per segment.
lvm_run lvs --noheadings --separator ';' -o lv_name,seg_pe_ranges "$VG" | sed 's/^ *//' >ranges.txt
pe_start=$(lvm_run pvs --noheadings --units b --nosuffix -o pe_start "${LOOPS[0]}" | tr -d ' ')
[ -s ranges.txt ] && [ -n "$pe_start" ] || fail "lvs/pvs printed nothing: $(cat ranges.txt)"
# lvm's device names -> our files.
sed -i -e "s#${LOOPS[0]}#pv1.img#g" -e "s#${LOOPS[1]}#pv2.img#g" ranges.txt
detach
pass "VG $VG: $(tr '\n' ' ' <ranges.txt) (pe_start $pe_start)"

DEVICES=$WORK/pv1.img:$WORK/pv2.img
export_of() { echo "$1=$VG/$1,format=${2:-lvm},lvm-devices=$DEVICES"; }
PORT=$(free_port)
luna_start --nbd "127.0.0.1:$PORT" --export "$(export_of lin)" --export "$(export_of str)" \
  --export "$(export_of multi)" --export "$(export_of ro)" --export "$(export_of image)"
uri() { echo "nbd://127.0.0.1:$PORT/$1"; }

# Fill each LV with random data through lunad, then check every byte in the PV files.
for lv in lin str multi; do
  "$SYSTEM_PYTHON" - "$(uri "$lv")" "$lv.data" <<'PY'
import nbd, os, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
data = os.urandom(h.get_size())
for offset in range(0, len(data), 1 << 20):
    h.pwrite(data[offset:offset + (1 << 20)], offset)
h.flush()
assert h.pread(len(data), 0) == data, "read back differs"
open(sys.argv[2], "wb").write(data)
PY
  "$SYSTEM_PYTHON" - "$lv" "$pe_start" ranges.txt <<'PY'
import sys
lv, pe_start, ranges = sys.argv[1], int(sys.argv[2]), sys.argv[3]
extent = 1 << 20
data = open(lv + ".data", "rb").read()
pv = {name: open(name, "rb").read() for name in ("pv1.img", "pv2.img")}
lv_offset = 0
for line in open(ranges):
    name, areas = line.strip().split(";")
    if name != lv:
        continue
    areas = [(a.split(":")[0], int(a.split(":")[1].split("-")[0]), int(a.split(":")[1].split("-")[1]))
             for a in areas.split()]
    per_area = (areas[0][2] - areas[0][1] + 1) * extent
    size = per_area * len(areas)
    if len(areas) == 1:
        file, first, _ = areas[0]
        start = pe_start + first * extent
        assert pv[file][start:start + size] == data[lv_offset:lv_offset + size], f"{lv}: linear segment differs"
    else:
        chunk = 64 << 10
        for c in range(size // chunk):
            file, first, _ = areas[c % len(areas)]
            start = pe_start + first * extent + (c // len(areas)) * chunk
            expected = data[lv_offset + c * chunk:lv_offset + (c + 1) * chunk]
            assert pv[file][start:start + chunk] == expected, f"{lv}: stripe chunk {c} differs"
    lv_offset += size
assert lv_offset == len(data), f"{lv}: segments cover {lv_offset} of {len(data)} bytes"
PY
  pass "$lv: $(stat -c %s "$lv.data") bytes written through lunad are where lvs says, in the PV files"
done

# The read-only LV is served read-only, with the reason in the log.
nbdinfo "$(uri ro)" | grep -q "is_read_only: true" || fail "ro: not served read-only"
grep -q "opened read-only: lvm marks $VG/ro read-only" "$LUNAD_LOG" || fail "ro: no notice in the log"
pass "a read-only LV is served read-only"

# A qcow2 image inside an LV: written into it raw, then served as qcow2 over the LV.
qemu-img create -q -f qcow2 inner.qcow2 8M
"$SYSTEM_PYTHON" - "$(uri image)" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(open("inner.qcow2", "rb").read(), 0)
h.flush()
PY
luna_stop
PORT=$(free_port)
luna_start --nbd "127.0.0.1:$PORT" --export "$(export_of image qcow2)" --export "$(export_of lin)"
[ "$(nbdinfo --size "$(uri image)")" = 8388608 ] || fail "qcow2 over an LV: size $(nbdinfo --size "$(uri image)")"
"$SYSTEM_PYTHON" - "$(uri image)" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(b"\x5a" * 65536, 1 << 20)
h.flush()
assert h.pread(65536, 1 << 20) == b"\x5a" * 65536
assert h.pread(4096, 0) == bytes(4096)
PY
pass "a qcow2 image inside an LV is served as qcow2 (8 MiB, written and read back)"

# Metadata changes under a running lunad.  A new LV: writes to lin go on.
attach
lvm_run lvcreate -an -Zn -L 4M -n other "$VG" >/dev/null
write_lin() {
  "$SYSTEM_PYTHON" - "$(uri lin)" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.flush()  # lunad re-reads the metadata here
try:
    h.pwrite(b"\x11" * 4096, 0)
    h.flush()
    print("written")
except nbd.Error as e:
    print("refused:", e.string)
PY
}
[ "$(write_lin)" = written ] || fail "a new LV in the VG stopped writes to lin"
pass "another LV created under lunad: lin is still written"
# lin's mapping changes (a second segment): writes are refused from the next flush on.
lvm_run lvextend -L +2M "$VG/lin" "${LOOPS[1]}" >/dev/null
detach
result=$(write_lin)
case "$result" in refused*) ;; *) fail "writes to lin went on after its mapping changed: $result" ;; esac
pass "lin extended under lunad: writes refused ($result)"
luna_stop

# Refusals: an LV the VG does not have, a PV left out.
refused() {
  local label=$1 text=$2; shift 2
  local status=0
  "$LUNAD" --nbd "127.0.0.1:$(free_port)" --export "$@" >refused.log 2>&1 || status=$?
  [ "$status" != 0 ] || fail "$label: lunad started"
  grep -qF -- "$text" refused.log || fail "$label: lunad said: $(cat refused.log)"
  pass "$label: $(grep -F -- "$text" refused.log | head -n 1)"
}
refused "unknown LV" "volume group $VG has no logical volume nope" "x=$VG/nope,format=lvm,lvm-devices=$DEVICES"
refused "striped LV without its second PV" "which is not among the lvm_devices" \
  "x=$VG/str,format=lvm,lvm-devices=$WORK/pv1.img"
refused "not VG/LV" "an LVM volume is named VG/LV" "x=$VG,format=lvm,lvm-devices=$DEVICES"
refused "no lvm_devices, not active" "is not active in device-mapper" "x=$VG/lin,format=lvm"
