#!/usr/bin/env bash
# qcow2 images with an external data file (data_file, data_file_raw):
#  1. luna-img create is byte-identical to qemu-img create (image and data
#     file) and refuses what qemu-img refuses, with its messages;
#  2. images qemu-img made and qemu-io wrote read byte-exact through lunad;
#  3. writes, zeroes and trims through lunad (libnbd) leave images that
#     `qemu-img check` calls clean and `qemu-img convert` reads as written;
#     a raw data file (data_file_raw=on) stays equal to the guest's view;
#  4. a relative data file name is found beside the image whatever lunad's
#     working directory; a missing data file is refused by name.
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img qemu-io
SYSTEM_PYTHON=/usr/bin/python3
cd "$WORK"

MiB=$((1024 * 1024))

# ---------------------------------------------------------------- create
for options in "data_file=D" "data_file=D,data_file_raw=on" "data_file=D,preallocation=metadata" \
  "data_file=D,preallocation=falloc" "data_file=D,preallocation=full,data_file_raw=on" \
  "data_file=D,extended_l2=on,cluster_size=128k" "data_file=D,cluster_size=512,data_file_raw=on"; do
  qemu-img create -q -f qcow2 -o "${options//D/q.data}" q.qcow2 20M || fail "qemu-img create -o $options"
  "$LUNA_IMG" create -q -f qcow2 -o "${options//D/l.data}" l.qcow2 20M || fail "luna-img create -o $options"
  # The header names its data file: make the names the same length, then compare byte for byte.
  cmp <(sed 's/q\.data/X.data/' q.qcow2) <(sed 's/l\.data/X.data/' l.qcow2) >/dev/null ||
    fail "create -o $options: image differs from qemu-img's"
  cmp q.data l.data || fail "create -o $options: data file differs from qemu-img's"
  [ "$(stat -c %s l.data)" = $((20 * MiB)) ] || fail "create -o $options: data file is not the virtual size"
  qemu-img check -q l.qcow2 || fail "create -o $options: qemu-img check"
  diff <(qemu-img info l.qcow2) <("$LUNA_IMG" info l.qcow2) || fail "create -o $options: info differs"
done
pass "luna-img create with data files matches qemu-img byte for byte"

expect_refusal() {
  local message=$1; shift
  local out status=0
  out=$("$LUNA_IMG" create -q -f qcow2 "$@" 2>&1) || status=$?
  [ $status -eq 1 ] || fail "create $*: exit $status, expected 1"
  grep -qF "$message" <<<"$out" || fail "create $*: '$out' does not say '$message'"
}
expect_refusal "data-file-raw requires data-file" -o data_file_raw=on x.qcow2 1M
expect_refusal "External data files are only supported with compatibility level 1.1" \
  -o data_file=x.data,compat=0.10 x.qcow2 1M
expect_refusal "Backing file and data-file-raw cannot be used at the same time" \
  -b l.qcow2 -F qcow2 -o data_file=x.data,data_file_raw=on x.qcow2
pass "create refuses what qemu-img refuses"

# ---------------------------------------------------------------- serving
# images/NAME.qcow2 with data file NAME.data beside it (a relative name).
mkdir images
make_image() {
  local name=$1 options=$2
  (cd images && qemu-img create -q -f qcow2 -o "data_file=$name.data${options:+,$options}" "$name.qcow2" 32M) ||
    fail "qemu-img create $name"
  (cd images && qemu-io -f qcow2 -c "write -P 0xa1 0 100k" -c "write -z 1M 128k" -c "write -P 0xb2 3M 4k" \
    -c "write -P 0xc3 $((31 * MiB)) 1M" "$name.qcow2" >/dev/null) || fail "qemu-io on $name"
}
make_image plain ""
make_image raw "data_file_raw=on"
make_image extended "extended_l2=on"
make_image small "cluster_size=512"

port=$(free_port)
exports=()
for name in plain raw extended small; do exports+=(--export "$name=$WORK/images/$name.qcow2,format=qcow2"); done
# From another directory: relative data file names resolve beside the image.
cd /
luna_start --nbd "127.0.0.1:$port" "${exports[@]}"
cd "$WORK"

for name in plain raw extended small; do
  nbdcopy "nbd://127.0.0.1:$port/$name" "$name.served" || fail "nbdcopy from $name"
  # qemu-img 7.2 looks for a relative data file name in its working directory.
  (cd images && qemu-img convert -U -O raw "$name.qcow2" "../$name.expected") || fail "qemu-img convert $name"
  cmp "$name.served" "$name.expected" || fail "$name: lunad serves other bytes than qemu-img reads"
done
pass "qemu-img's data-file images read byte-exact through lunad"

# Writes at odd offsets and lengths, zeroes with and without unmapping,
# trims; the same operations on a plain file give the expected content.
"$SYSTEM_PYTHON" - "$port" "$WORK" <<'PY' || fail "writes through lunad"
import os, random, sys
import nbd
port, work = sys.argv[1], sys.argv[2]
for name in ["plain", "raw", "extended", "small"]:
    rng = random.Random(name)
    model = open(f"{work}/{name}.expected", "r+b")
    h = nbd.NBD()
    h.connect_uri(f"nbd://127.0.0.1:{port}/{name}")
    size = h.get_size()
    for i in range(300):
        op = rng.choice(["write", "write", "write", "zero", "zero-keep", "trim"])
        length = rng.choice([512, 4096, 65536, 200000, rng.randrange(1, 300000)])
        offset = rng.randrange(0, size - length)
        if op == "write":
            data = os.urandom(length)
            h.pwrite(data, offset)
            model.seek(offset); model.write(data)
        elif op in ("zero", "zero-keep"):
            h.zero(length, offset, nbd.CMD_FLAG_NO_HOLE if op == "zero-keep" else 0)
            model.seek(offset); model.write(bytes(length))
        elif h.can_trim():
            # Trim is advisory: only what reads back afterwards says what it did.
            h.trim(length, offset)
            model.seek(offset); model.write(h.pread(length, offset))
    h.flush()
    model.flush()
    model.seek(0)
    expected = model.read()
    got = b"".join(h.pread(min(4 << 20, size - o), o) for o in range(0, size, 4 << 20))
    if got != expected:
        sys.exit(f"{name}: reads after writes differ from what was written")
    h.shutdown()
PY
luna_stop
for name in plain raw extended small; do
  (cd images && qemu-img check -q "$name.qcow2") || fail "$name: qemu-img check after writes through lunad"
  (cd images && qemu-img convert -O raw "$name.qcow2" "../$name.after") || fail "qemu-img convert $name"
  cmp "$name.after" "$name.expected" || fail "$name: qemu-img reads other bytes than lunad wrote"
done
cmp images/raw.data raw.expected || fail "raw: the raw data file no longer equals the guest's view"
pass "writes, zeroes and trims through lunad: check clean, content as written, raw data file faithful"

# ---------------------------------------------------------------- refusals
mv images/plain.data images/plain.moved
out=$(timeout 20 "$LUNAD" --nbd "127.0.0.1:$port" --export "p=$WORK/images/plain.qcow2,format=qcow2" 2>&1) &&
  fail "lunad opened an image whose data file is missing"
grep -q "plain.data" <<<"$out" || fail "missing data file: message does not name it: $out"
pass "a missing data file is refused by name"
