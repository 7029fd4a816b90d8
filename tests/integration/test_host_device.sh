#!/usr/bin/env bash
# format=host_device on a loop device: size and flags from the block device,
# qemu-io patterns, discard and write_zeroes (BLKDISCARD / BLKZEROOUT /
# fallocate paths), buffered and O_DIRECT; the device's backing file must end
# up as the same commands leave a plain local file.
source "$(dirname "$0")/lib.sh"

truncate -s 32M "$WORK/backing.img"
loop=
if ! loop=$(losetup -f --show "$WORK/backing.img" 2>"$WORK/losetup.err"); then
  echo "SKIP: losetup not permitted here: $(cat "$WORK/losetup.err")"
  exit 0
fi
trap 'status=$?; [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null; _luna_cleanup "$status"' EXIT
echo "loop device: $loop"

buffered=(
  -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M'
  -c 'write -P 0x11 1 513' -c 'read -P 0x11 1 513' -c 'read -P 0xab 514 510'
  -c 'write -P 0xcd 1M 2M' -c 'write -z 1M 1M' -c 'read -P 0 1M 1M' -c 'read -P 0xcd 2M 1M'
  -c 'write -z -u 2M 512k' -c 'read -P 0 2M 512k' -c 'read -P 0xcd 2560k 512k'
  -c 'write -P 0xee 4M 1M' -c 'discard 4M 1M' -c 'write -z 4M 1M' -c 'read -P 0 4M 1M'
  -c 'write -z 5000 3000' -c 'read -P 0 5000 3000'
  -c 'flush'
)
direct=(
  -c 'write -P 0x5a 8M 1M' -c 'read -P 0x5a 8M 1M'
  -c 'write -P 0x5b 8389121 1000' -c 'read -P 0x5b 8389121 1000' -c 'read -P 0x5a 8390121 1000'
  -c 'write -f -P 0x5c 10M 64k' -c 'write -z 10M 4k' -c 'read -P 0 10M 4k' -c 'read -P 0x5c 10244k 60k'
  -c 'write -P 0x5d 12M 1M' -c 'discard 12M 1M' -c 'write -z -u 12M 1M' -c 'read -P 0 12M 1M'
  -c 'flush'
)
truncate -s 32M "$WORK/expected.img"
qemu-io -f raw "${buffered[@]}" "${direct[@]}" "$WORK/expected.img" >"$WORK/expected.log" 2>&1 \
  || { cat "$WORK/expected.log"; fail "the command list fails on a local file"; }

run_qemu_io() { # uri commands...
  local uri=$1; shift
  local status=0
  qemu-io -f raw "$@" "$uri" >"$WORK/qemu-io.log" 2>&1 || status=$?
  if [ $status -ne 0 ] || grep -Eqi 'fail|error|verification' "$WORK/qemu-io.log"; then
    cat "$WORK/qemu-io.log"; fail "qemu-io on $uri (exit $status)"
  fi
}

port=$(free_port)
luna_start --nbd "127.0.0.1:$port" --export "dev=$loop,format=host_device,description=loop device"
nbdinfo --json "nbd://127.0.0.1:$port/dev" >"$WORK/info.json" || fail "nbdinfo on the host_device export"
"$SYSTEM_PYTHON" - "$WORK/info.json" <<'PY' || fail "host_device export properties"
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
ok = (e["export-size"] == 32 * 2**20 and not e["is_read_only"] and e["can_trim"] and e["can_zero"]
      and e["can_flush"] and e["can_fua"] and e["block_size_maximum"] == 32 * 2**20)
print(" ", {k: e[k] for k in sorted(e) if k.startswith(("can_", "block_size", "export-size", "is_"))})
sys.exit(0 if ok else 1)
PY
run_qemu_io "nbd://127.0.0.1:$port/dev" "${buffered[@]}"
luna_stop
pass "host_device buffered: patterns, unaligned writes, write_zeroes (with and without unmap), discard"

luna_start --nbd "127.0.0.1:$port" --export "dev=$loop,format=auto,cache=none,aio=threads"
minimum=$(nbdinfo --json "nbd://127.0.0.1:$port/dev" | "$SYSTEM_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["block_size_minimum"])')
[ "$minimum" -ge 512 ] || fail "cache=none on a block device advertises minimum block size $minimum, expected the logical block size (512)"
run_qemu_io "nbd://127.0.0.1:$port/dev" "${direct[@]}"
luna_stop
pass "host_device (format=auto) with cache=none: aligned, unaligned, FUA, zero, discard"

# Everything lunad acknowledged went through the loop device into its file.
losetup -d "$loop"; loop=
cmp "$WORK/expected.img" "$WORK/backing.img" || fail "the loop device's backing file differs from the same commands on a local file"
pass "backing file of the loop device matches"
