#!/usr/bin/env bash
# nbdinfo against lunad: export flags, meta contexts, block sizes, --map,
# --list with descriptions, --can/--is, the default (empty) export name and an
# unknown export name.
source "$(dirname "$0")/lib.sh"

truncate -s 64M "$WORK/rw.img"
truncate -s 32M "$WORK/ro.img"
truncate -s 16M "$WORK/direct.img"
# Data at [1 MiB, 1 MiB + 64 KiB) of the read-only image, holes elsewhere.
dd if=/dev/urandom of="$WORK/ro.img" bs=64K count=1 seek=16 conv=notrunc status=none
port=$(free_port)
luna_start --nbd "127.0.0.1:$port" \
  --export "rw=$WORK/rw.img,description=scratch disk" \
  --export "ro=$WORK/ro.img,readonly=on,description=golden image" \
  --export "direct=$WORK/direct.img,cache=none,description=direct io"
base=nbd://127.0.0.1:$port

# check_json FILE PYTHON-EXPRESSIONS...: each expression (on the first export,
# bound to e) must be true; prints the failing one.
check_json() {
  local file=$1; shift
  "$SYSTEM_PYTHON" - "$file" "$@" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
e = doc["exports"][0]
bad = [x for x in sys.argv[2:] if not eval(x)]
for x in bad:
    print("  false:", x)
print("  export:", json.dumps({k: v for k, v in e.items() if k != "uri"}, sort_keys=True))
sys.exit(1 if bad else 0)
PY
}

nbdinfo --json "$base/rw" >"$WORK/rw.json" || fail "nbdinfo --json $base/rw failed"
check_json "$WORK/rw.json" \
  'doc["structured"] is True' \
  'e["export-name"] == "rw"' \
  'e["export-size"] == 64 * 2**20' \
  'e["description"] == "scratch disk"' \
  'e["is_read_only"] is False' \
  'all(e[k] is True for k in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn", "can_cache", "can_df"))' \
  '"base:allocation" in e["contexts"]' \
  'e["block_size_minimum"] == 1' \
  'e["block_size_preferred"] == 4096' \
  'e["block_size_maximum"] == 32 * 2**20' \
  || fail "nbdinfo --json on the writable export"
pass "writable export: size, flags, base:allocation, block sizes 1/4096/32M"

nbdinfo --json "$base/ro" >"$WORK/ro.json" || fail "nbdinfo --json $base/ro failed"
check_json "$WORK/ro.json" \
  'e["export-size"] == 32 * 2**20' \
  'e["is_read_only"] is True' \
  'e["can_trim"] is False and e["can_zero"] is False and e["can_fast_zero"] is False' \
  'e["can_multi_conn"] is True and e["can_cache"] is True and e["can_df"] is True' \
  '"base:allocation" in e["contexts"]' \
  || fail "nbdinfo --json on the read-only export"
pass "read-only export: read-only flag on, no trim/zero"

nbdinfo --json "$base/direct" >"$WORK/direct.json" || fail "nbdinfo --json $base/direct failed"
check_json "$WORK/direct.json" \
  'e["export-size"] == 16 * 2**20' \
  '512 <= e["block_size_minimum"] <= 4096 and e["block_size_minimum"] & (e["block_size_minimum"] - 1) == 0' \
  'e["block_size_preferred"] >= e["block_size_minimum"] and e["block_size_preferred"] >= 4096' \
  'e["block_size_maximum"] == 32 * 2**20' \
  'e["can_flush"] is True and e["can_fua"] is True' \
  || fail "nbdinfo --json on the cache=none export"
pass "cache=none export: minimum block size is the O_DIRECT alignment"

# --can / --is: exit 0 for true, 2 for false.
expect_status() {
  local want=$1; shift
  local got=0
  "$@" || got=$?
  [ "$got" -eq "$want" ] || fail "'$*' exited $got, expected $want"
}
expect_status 0 nbdinfo --can multi-conn "$base/rw"
expect_status 0 nbdinfo --can fast-zero "$base/rw"
expect_status 0 nbdinfo --can structured-reply "$base/rw"
expect_status 2 nbdinfo --is read-only "$base/rw"
expect_status 0 nbdinfo --is read-only "$base/ro"
expect_status 2 nbdinfo --can write "$base/ro"
expect_status 2 nbdinfo --can trim "$base/ro"
[ "$(nbdinfo --size "$base/ro")" = $((32 * 1024 * 1024)) ] || fail "nbdinfo --size $base/ro"
pass "--can / --is / --size"

# --map: exactly the 64 KiB of data at 1 MiB, holes (reading as zeroes) around it.
nbdinfo --map "$base/ro" >"$WORK/map.txt" || fail "nbdinfo --map failed"
cat "$WORK/map.txt"
"$SYSTEM_PYTHON" - "$WORK/map.txt" <<'PY' || fail "nbdinfo --map does not match the file's allocation"
import sys
MiB = 2**20
extents = []
for line in open(sys.argv[1]):
    start, length, flags = (int(x) for x in line.split()[:3])
    if extents and extents[-1][2] == flags and extents[-1][0] + extents[-1][1] == start:
        extents[-1][1] += length  # a server may split extents; merge equal neighbours
    else:
        extents.append([start, length, flags])
want = [[0, MiB, 3], [MiB, 64 * 1024, 0], [MiB + 64 * 1024, 32 * MiB - MiB - 64 * 1024, 3]]
if extents != want:
    print("got ", extents)
    print("want", want)
    sys.exit(1)
PY
nbdinfo --map=base:allocation --totals "$base/ro" | grep -Eq '^ *65536 +[0-9.]+% +0 +data' \
  || fail "nbdinfo --map --totals: no 65536-byte data total"
pass "--map shows base:allocation data and hole,zero extents"

# --list: every export with its description.
nbdinfo --list --json "$base/" >"$WORK/list.json" || fail "nbdinfo --list failed"
"$SYSTEM_PYTHON" - "$WORK/list.json" <<'PY' || fail "nbdinfo --list"
import json, sys
doc = json.load(open(sys.argv[1]))
got = {e["export-name"]: e.get("description") for e in doc["exports"]}
want = {"rw": "scratch disk", "ro": "golden image", "direct": "direct io"}
if got != want:
    print("got ", got); print("want", want); sys.exit(1)
PY
pass "--list lists every export with its description"

# The empty export name selects the first export.
nbdinfo --json "$base/" >"$WORK/default.json" || fail "nbdinfo on the empty export name failed"
check_json "$WORK/default.json" 'e["export-size"] == 64 * 2**20' 'e["is_read_only"] is False' \
  || fail "the empty export name does not select the first export (rw)"
pass "empty export name selects the first export"

if nbdinfo "$base/no-such-export" >"$WORK/unknown.out" 2>&1; then
  cat "$WORK/unknown.out"; fail "nbdinfo on an unknown export name succeeded"
fi
grep -qi "unknown\|not found\|no such\|export" "$WORK/unknown.out" || { cat "$WORK/unknown.out"; fail "no error message for an unknown export"; }
pass "unknown export name is refused"

luna_alive
luna_stop
pass "nbdinfo checks"
