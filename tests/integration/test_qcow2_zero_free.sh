#!/usr/bin/env bash
# qcow2 zeroes and discards free clusters as QEMU 7.2 does:
#  1. the same write_zeroes (may unmap, NO_HOLE) and trims applied through
#     lunad (libnbd) and through qemu-io to two copies of one image leave
#     the same `qemu-img map` (present/zero/data, offset or not, per
#     cluster) and the same allocated-cluster count, both checks clean:
#     v3, extended L2, 512-byte clusters (several batches), v2;
#  2. freed clusters are reused: writes to new guest clusters do not move
#     the image end, within the same lunad and after a restart;
#  3. reads racing a trim and a write that reuses the trimmed cluster see
#     the old data or zeroes, never the new write's.
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img qemu-io
cd "$WORK"

MiB=$((1024 * 1024))
K64=65536

# Each operation: "OP LENGTH OFFSET" with OP zero (may unmap), zero-keep (NO_HOLE), trim.
operations=(
  "zero 262144 0"                   # allocated: freed
  "zero-keep 262144 524288"         # allocated: kept, preallocated zero
  "trim 524288 $((3 * MiB))"        # allocated: freed
  "zero $K64 $((2 * MiB))"          # compressed: freed
  "zero-keep $K64 $((2 * MiB + K64))" # compressed: freed all the same
  "zero-keep $K64 $((8 * MiB))"     # kept ...
  "trim $K64 $((8 * MiB))"          # ... then freed by a trim
  "zero-keep $K64 $((9 * MiB))"     # kept ...
  "zero $K64 $((9 * MiB))"          # ... then freed by zeroes that may unmap
  "trim 131072 $((5 * MiB))"        # allocated: freed
  "trim $MiB $((12 * MiB))"         # unallocated without backing: nothing
  "zero-keep $K64 $((9 * MiB + K64))" # kept
  "trim $((4 * MiB)) $((16 * MiB))" # a large run over many clusters
  "zero $K64 $((20 * MiB))"         # unallocated without backing: a zero cluster ...
  "zero-keep $K64 $((20 * MiB + K64))" # ... either way
  "trim $K64 $((20 * MiB + K64))"   # ... which a trim leaves as it is
)
# Zeroes for parts of clusters (64 KiB ones; whole 512-byte ones), where the rest reads as
# zeroes: a zero cluster, nothing allocated; over data: written zeroes.  Not with extended L2,
# where QEMU marks subclusters and luna writes zeroes (the same content).
partial_operations=(
  "zero 4096 $((22 * MiB + 8192))"  # unallocated: a zero cluster
  "zero-keep 4096 $((22 * MiB + K64 + 8192))" # the same without unmapping
  "zero 8192 $((20 * MiB + 4096))"  # inside the zero cluster made above
  "zero 4096 $((MiB - 8192))"       # partly over data: zeroes written
  "zero 12288 $((23 * MiB - 4096))" # over two clusters' parts
)

# qemu-io spelling of the operations (the arguments).
qemu_io_args() {
  local op length offset
  for line in "$@"; do
    read -r op length offset <<<"$line"
    case $op in
      zero) printf '%s\0' -c "write -z -u $offset $length" ;;
      zero-keep) printf '%s\0' -c "write -z $offset $length" ;;
      trim) printf '%s\0' -c "discard $offset $length" ;;
    esac
  done
}

# Per cluster: present, zero, data, whether an offset is given (allocation order may differ).
map_shape() {
  qemu-img map --output=json "$1" | "$SYSTEM_PYTHON" -c '
import json, sys
cluster = int(sys.argv[1])
for e in json.load(sys.stdin):
    for start in range(e["start"], e["start"] + e["length"], cluster):
        print(start, e["present"], e["zero"], e["data"], "offset" in e)
' "$2"
}

check_json() { qemu-img check --output=json "$1" 2>/dev/null; }
json_field() { "$SYSTEM_PYTHON" -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], 0))' "$1"; }

port=$(free_port)
for options in "cluster_size=64k" "cluster_size=64k,extended_l2=on" "cluster_size=512" "compat=0.10"; do
  cluster=65536
  [[ $options == *cluster_size=512* ]] && cluster=512
  qemu-img create -q -f qcow2 -o "$options" base.qcow2 24M || fail "qemu-img create $options"
  qemu-io -f qcow2 -c "write -P 0x11 0 $MiB" -c "write -c -P 0x22 $((2 * MiB)) 128k" \
    -c "write -P 0x33 $((3 * MiB)) $MiB" -c "write -P 0x44 $((5 * MiB)) 512k" \
    -c "write -P 0x55 $((8 * MiB)) $((2 * MiB))" -c "write -P 0x66 $((16 * MiB)) $((4 * MiB))" \
    base.qcow2 >/dev/null || fail "qemu-io writes ($options)"
  cp base.qcow2 a.qcow2
  cp base.qcow2 b.qcow2
  ops=("${operations[@]}")
  [[ $options == *extended_l2* ]] || ops+=("${partial_operations[@]}")
  mapfile -d '' qemu_ops < <(qemu_io_args "${ops[@]}")

  qemu-io -f qcow2 "${qemu_ops[@]}" b.qcow2 >/dev/null || fail "qemu-io operations ($options)"

  luna_start --nbd "127.0.0.1:$port" --export "a=$WORK/a.qcow2,format=qcow2"
  "$SYSTEM_PYTHON" - "$port" "${ops[@]}" <<'PY' || fail "operations through lunad ($options)"
import sys
import nbd
h = nbd.NBD()
h.connect_uri(f"nbd://127.0.0.1:{sys.argv[1]}/a")
for line in sys.argv[2:]:
    op, length, offset = line.split()
    length, offset = int(length), int(offset)
    if op == "zero":
        h.zero(length, offset)
    elif op == "zero-keep":
        h.zero(length, offset, nbd.CMD_FLAG_NO_HOLE)
    else:
        h.trim(length, offset)
h.flush()
h.shutdown()
PY
  luna_stop

  diff <(map_shape b.qcow2 $cluster) <(map_shape a.qcow2 $cluster) >map.diff ||
    fail "$options: qemu-img map differs between qemu-io (<) and lunad (>): $(head -20 map.diff)"
  qemu-img check -q a.qcow2 || fail "$options: qemu-img check of lunad's image"
  qemu-img check -q b.qcow2 || fail "$options: qemu-img check of qemu-io's image"
  a_allocated=$(check_json a.qcow2 | json_field allocated-clusters)
  b_allocated=$(check_json b.qcow2 | json_field allocated-clusters)
  [ "$a_allocated" = "$b_allocated" ] ||
    fail "$options: lunad leaves $a_allocated allocated clusters, qemu-io $b_allocated"
  qemu-img convert -O raw a.qcow2 a.raw && qemu-img convert -O raw b.qcow2 b.raw || fail "qemu-img convert"
  cmp a.raw b.raw || fail "$options: content differs from qemu-io's"
  pass "$options: zeroes and trims through lunad leave qemu-io's map, allocation and content"

  # Reuse: 256 KiB of new guest clusters fit in what was freed (more than 1 MiB).
  end_before=$(check_json a.qcow2 | json_field image-end-offset)
  luna_start --nbd "127.0.0.1:$port" --export "a=$WORK/a.qcow2,format=qcow2"
  "$SYSTEM_PYTHON" - "$port" <<'PY' || fail "writes after frees ($options)"
import sys
import nbd
h = nbd.NBD()
h.connect_uri(f"nbd://127.0.0.1:{sys.argv[1]}/a")
h.pwrite(b"\x77" * 262144, 13 << 20)
# Freed and reused within the same lunad: these clusters, then new ones.
h.trim(262144, 13 << 20)
h.pwrite(b"\x78" * 262144, 14 << 20)
h.flush()
if h.pread(262144, 14 << 20) != b"\x78" * 262144:
    sys.exit("written data does not read back")
h.shutdown()
PY
  luna_stop
  end_after=$(check_json a.qcow2 | json_field image-end-offset)
  [ "$end_after" -le "$end_before" ] ||
    fail "$options: writes to new clusters grew the image ($end_before -> $end_after) instead of reusing freed ones"
  qemu-img check -q a.qcow2 || fail "$options: qemu-img check after reuse"
  pass "$options: freed clusters are reused (image end $end_before -> $end_after)"
done

# ---------------------------------------------------------------- races
# Reads of cluster X racing "trim X; write Y" (Y likely lands on X's old
# host cluster) see X's old data or zeroes, never Y's: a smoke test
# through the server's paths; test_qcow2_zero_free.c checks the wait
# itself deterministically.
qemu-img create -q -f qcow2 -o cluster_size=64k race.qcow2 64M || fail "qemu-img create race"
luna_start --nbd "127.0.0.1:$port" --export "r=$WORK/race.qcow2,format=qcow2"
"$SYSTEM_PYTHON" - "$port" <<'PY' || fail "reads racing frees and reuse"
import sys
import nbd
port = sys.argv[1]
C = 65536
readers = [nbd.NBD() for _ in range(3)]
writer = nbd.NBD()
for h in readers + [writer]:
    h.connect_uri(f"nbd://127.0.0.1:{port}/r")
old = lambda i: bytes([1 + i % 100]) * C
new = lambda i: bytes([128 + i % 100]) * C
zero = bytes(C)
for i in range(200):
    x = (i % 64) * C
    y = (64 + i % 64) * C
    writer.pwrite(old(i), x)
    pending = []
    for h in readers:
        for _ in range(4):
            buf = nbd.Buffer(C)
            pending.append((h, buf, h.aio_pread(buf, x)))
    trim = writer.aio_trim(C, x)
    write = writer.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(new(i))), y)
    for h in readers:
        buf = nbd.Buffer(C)
        pending.append((h, buf, h.aio_pread(buf, x)))
    for cookie in (trim, write):
        while not writer.aio_command_completed(cookie):
            writer.poll(-1)
    for h, buf, cookie in pending:
        while not h.aio_command_completed(cookie):
            h.poll(-1)
        got = bytes(buf.to_bytearray())
        if got != old(i) and got != zero:
            sys.exit(f"iteration {i}: a read of the trimmed cluster saw other data ({got[0]:#x})")
    writer.trim(C, y)
for h in readers + [writer]:
    h.shutdown()
PY
luna_stop
qemu-img check -q race.qcow2 || fail "qemu-img check after the races"
pass "reads racing a free and a reuse see old data or zeroes"
