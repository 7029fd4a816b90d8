#!/usr/bin/env bash
# qemu-io patterns (aligned and unaligned writes, write -z, discard, flush,
# aio writes) against every cache mode x I/O engine.  Each run is replayed
# on a local file too, and the export's backing file must end up identical.
source "$(dirname "$0")/lib.sh"

size=8M
commands=(
  -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M'
  -c 'write -P 0xcd 1M 1M' -c 'write -z 1M 1M' -c 'read -P 0 1M 1M'
  -c 'write -P 0xcd 2M 1M' -c 'discard 2M 1M' -c 'read -P 0 2M 1M'
  -c 'flush'
  -c 'write -P 0x11 1 513' -c 'read -P 0x11 1 513' -c 'read -P 0xab 0 1' -c 'read -P 0xab 514 510'
  -c 'write -P 0x22 4095 2' -c 'read -P 0x22 4095 2' -c 'read -P 0xab 4097 4095'
  -c 'write -z 5000 3000' -c 'write -P 0x77 6M 64k' -c 'write -z -u 6M 64k' -c 'read -P 0 6M 64k' -c 'read -P 0 5000 3000' -c 'read -P 0xab 8000 192'
  -c 'write -f -P 0x44 3M 64k' -c 'read -P 0x44 3M 64k'
  -c 'aio_write -P 0x55 4M 64k' -c 'aio_write -P 0x56 5M 512' -c 'aio_write -P 0x57 6M 1M' -c 'aio_flush'
  -c 'read -P 0x55 4M 64k' -c 'read -P 0x56 5M 512' -c 'read -P 0x57 6M 1M'
  -c 'write -P 0x66 7340031 4097' -c 'read -P 0x66 7340031 4097'
  -c 'flush'
)

# The expected image: the same commands on a local file.
truncate -s $size "$WORK/expected.img"
qemu-io -f raw "${commands[@]}" "$WORK/expected.img" >"$WORK/expected.log" 2>&1 \
  || { cat "$WORK/expected.log"; fail "qemu-io on a local file failed: the command list is wrong"; }

exports=()
names=()
for cache in writeback writethrough none directsync unsafe; do
  for aio in io_uring threads; do
    name=$cache-$aio
    truncate -s $size "$WORK/$name.img"
    exports+=(--export "$name=$WORK/$name.img,cache=$cache,aio=$aio")
    names+=("$name")
  done
done
socket=$WORK/lunad.sock
port=$(free_port)
luna_start --nbd "127.0.0.1:$port" --unix "$socket" "${exports[@]}"

for name in "${names[@]}"; do
  # Alternate transports, so both carry every engine somewhere.
  case $name in
    *io_uring) uri="nbd://127.0.0.1:$port/$name" ;;
    *) uri="nbd+unix:///$name?socket=$socket" ;;
  esac
  status=0
  qemu-io -f raw "${commands[@]}" "$uri" >"$WORK/$name.log" 2>&1 || status=$?
  if [ $status -ne 0 ] || grep -Eqi 'fail|error|mismatch|verification' "$WORK/$name.log"; then
    cat "$WORK/$name.log"
    fail "qemu-io on $uri (exit $status)"
  fi
  cmp "$WORK/expected.img" "$WORK/$name.img" || fail "export $name: backing file differs from the same commands on a local file"
  pass "qemu-io patterns on $name"
done

# A read-only view of one of them: reads work, writes are refused.
luna_alive
luna_stop
luna_start --nbd "127.0.0.1:$port" --export "ro=$WORK/none-threads.img,readonly=on,cache=none"
qemu-io -r -f raw -c 'read -P 0xab 0 1' -c 'read -P 0x11 1 513' "nbd://127.0.0.1:$port/ro" >"$WORK/ro.log" 2>&1 \
  && ! grep -Eqi 'fail|error' "$WORK/ro.log" || { cat "$WORK/ro.log"; fail "reads from a read-only cache=none export"; }
if qemu-io -f raw -c 'write -P 0x99 0 4k' "nbd://127.0.0.1:$port/ro" >"$WORK/ro-write.log" 2>&1 \
   && ! grep -Eqi 'fail|error|denied|read-only|not permitted' "$WORK/ro-write.log"; then
  cat "$WORK/ro-write.log"; fail "a write to a read-only export was not refused"
fi
cmp "$WORK/expected.img" "$WORK/none-threads.img" || fail "the read-only export's file changed"
pass "read-only export: reads served, writes refused"
luna_stop
