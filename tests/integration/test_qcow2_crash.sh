#!/usr/bin/env bash
# qcow2 crash safety: kill -9 lunad in the middle of a write workload with
# FLUSHes, at moments fixed by seeds, on fresh images of several layouts.
# Each time qemu-img check must find no corruption (leaked clusters are
# allowed, and luna repairs nothing behind its back), every write a FLUSH
# covered must read back, and no block may hold anything but its own data
# or zeroes.  Then lunad must serve the image again and write more.
source "$(dirname "$0")/lib.sh"

round() { # seed qemu-img-create-options
  local seed=$1 options=$2 image=$WORK/crash-$1.qcow2 port
  qemu-img create -q -f qcow2 -o "$options" "$image" 64M
  port=$(free_port)
  luna_start --nbd "127.0.0.1:$port" --export "d=$image,format=qcow2"
  "$SYSTEM_PYTHON" "$(dirname "$0")/crash_writer.py" write "nbd://127.0.0.1:$port/d" "$WORK/log-$seed" "$seed" \
    >"$WORK/writer-$seed.out" 2>&1 &
  local writer=$!
  for _ in $(seq 1 200); do grep -qs flowing "$WORK/writer-$seed.out" && break; sleep 0.05; done
  grep -q flowing "$WORK/writer-$seed.out" || fail "seed $seed: no flush completed"
  # A moment fixed by the seed, 50 to 450 ms after the first flush.
  sleep "0.$(( (seed * 7919) % 400 + 50 ))"
  luna_crash "$image"
  wait "$writer" || { cat "$WORK/writer-$seed.out"; fail "seed $seed: the writer saw no durable write"; }

  local status=0
  qemu-img check "$image" >"$WORK/check-$seed.out" 2>&1 || status=$?
  # 0: clean; 3: leaked clusters only.  Anything else is corruption.
  if [ $status -ne 0 ] && [ $status -ne 3 ]; then
    cat "$WORK/check-$seed.out"; fail "seed $seed ($options): qemu-img check exit $status"
  fi
  qemu-img convert -f qcow2 -O raw "$image" "$WORK/raw-$seed"
  "$SYSTEM_PYTHON" "$(dirname "$0")/crash_writer.py" verify "$WORK/log-$seed" "$WORK/raw-$seed" "$seed" ||
    fail "seed $seed ($options): flushed writes lost or blocks mixed up"
  rm -f "$WORK/raw-$seed"

  # The image serves again after the crash, and more writes keep it consistent.
  port=$(free_port)
  luna_start --nbd "127.0.0.1:$port" --export "d=$image,format=qcow2"
  nbdcopy --synchronous <(head -c 8M /dev/urandom) "nbd://127.0.0.1:$port/d" ||
    fail "seed $seed: writing after the crash"
  luna_stop
  status=0
  qemu-img check "$image" >"$WORK/check-$seed.out" 2>&1 || status=$?
  if [ $status -ne 0 ] && [ $status -ne 3 ]; then
    cat "$WORK/check-$seed.out"; fail "seed $seed: qemu-img check after restart exit $status"
  fi
  pass "seed $seed ($options): check $( [ $status -eq 0 ] && echo clean || echo 'leaks only'), flushed writes intact"
}

round 1 cluster_size=64k
round 2 cluster_size=4k
round 3 cluster_size=64k,compat=0.10
round 4 cluster_size=64k,extended_l2=on
round 5 cluster_size=512,refcount_bits=64
