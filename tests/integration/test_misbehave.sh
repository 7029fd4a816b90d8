#!/usr/bin/env bash
# Misbehaving NBD clients (misbehave.py, raw sockets): garbage, wrong flags and
# magic, truncated and oversized requests, unknown commands and flags,
# clients vanishing mid-write or with requests in flight.  After each one
# lunad must still run and serve another client correctly, and at the end it
# must stop cleanly.
source "$(dirname "$0")/lib.sh"

helper=$(dirname "$0")/misbehave.py
truncate -s 64M "$WORK/disk.img"
# A known pattern at [48 MiB, 49 MiB) that other clients check after each scenario.
"$SYSTEM_PYTHON" -c "
import os
with open('$WORK/disk.img', 'r+b') as f:
    f.seek(48 << 20); f.write(b'\xa5' * (1 << 20))
"
port=$(free_port)
luna_start --nbd "127.0.0.1:$port" --export "disk=$WORK/disk.img" --export "other=$WORK/disk.img,readonly=on"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$LUNAD_PID/status"; }

still_serving() {
  local after=$1
  luna_alive
  nbdinfo --size "nbd://127.0.0.1:$port/other" >/dev/null \
    || fail "after $after: nbdinfo on another export fails"
  local log=$WORK/check.log
  qemu-io -r -f raw -c 'read -P 0xa5 48M 1M' "nbd://127.0.0.1:$port/disk" >"$log" 2>&1 \
    && ! grep -qi 'fail\|error' "$log" || { cat "$log"; fail "after $after: qemu-io read of the known pattern fails"; }
}

# Runs alongside the others: it takes the 10 s handshake limit.
"$SYSTEM_PYTHON" "$helper" 127.0.0.1 "$port" disk silent_client >"$WORK/silent.log" 2>&1 &
silent=$!

scenarios=(
  garbage_before_greeting garbage_handshake unknown_client_flags unknown_option huge_option_then_vanish
  abort_option request_before_go bad_request_magic truncated_header disconnect_mid_write oversize_write
  oversize_read unknown_command unknown_command_structured unknown_flags out_of_order_cookies
  many_connections_vanish
)
failed=()
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
for scenario in "${scenarios[@]}"; do
  echo "--- $scenario"
  started=$(now_ms)
  "$SYSTEM_PYTHON" "$helper" 127.0.0.1 "$port" disk "$scenario" || failed+=("$scenario")
  still_serving "$scenario"
  echo "    ($(( $(now_ms) - started )) ms)"
done

echo "--- absurd_write_length"
started=$(now_ms)
rss_before=$(rss_kib)
"$SYSTEM_PYTHON" "$helper" 127.0.0.1 "$port" disk absurd_write_length || failed+=(absurd_write_length)
still_serving absurd_write_length
rss_after=$(rss_kib)
echo "lunad RSS: $rss_before KiB before, $rss_after KiB after ($(( $(now_ms) - started )) ms)"
[ $((rss_after - rss_before)) -lt $((512 * 1024)) ] \
  || fail "lunad grew by $(((rss_after - rss_before) / 1024)) MiB on a WRITE announcing 4 GiB"

# READs of 32 MiB from a client that never reads: lunad must bound what it buffers
# (64 MiB of request data in flight plus 16 MiB of queued replies per connection).
echo "--- reads_never_read"
rss_before=$(rss_kib)
MISBEHAVE_HOLD_SECONDS=4 "$SYSTEM_PYTHON" "$helper" 127.0.0.1 "$port" disk reads_never_read \
  >"$WORK/reads.log" 2>&1 &
reader=$!
sleep 2.5
rss_held=$(rss_kib)
still_serving reads_never_read
wait $reader || { cat "$WORK/reads.log"; failed+=(reads_never_read); }
cat "$WORK/reads.log"
echo "lunad RSS: $rss_before KiB before, $rss_held KiB while the client held 100 x 32 MiB READs"
[ $((rss_held - rss_before)) -lt $((256 * 1024)) ] \
  || fail "lunad grew by $(((rss_held - rss_before) / 1024)) MiB for one client's unread READs"

# Several misbehaving clients at once, while a good one works.
echo "--- concurrent"
started=$(now_ms)
pids=()
for scenario in many_connections_vanish disconnect_mid_write garbage_handshake bad_request_magic; do
  "$SYSTEM_PYTHON" "$helper" 127.0.0.1 "$port" disk "$scenario" >"$WORK/concurrent-$scenario.log" 2>&1 &
  pids+=($!)
done
qemu-io -f raw -c 'write -P 0x3c 32M 4M' -c 'read -P 0x3c 32M 4M' "nbd://127.0.0.1:$port/disk" >"$WORK/good.log" 2>&1 \
  && ! grep -qi 'fail\|error' "$WORK/good.log" || { cat "$WORK/good.log"; fail "a good client failed while others misbehaved"; }
for pid in "${pids[@]}"; do wait "$pid" || failed+=("concurrent($pid)"); done
still_serving concurrent
echo "    ($(( $(now_ms) - started )) ms)"

wait $silent || failed+=(silent_client)
cat "$WORK/silent.log"

if [ ${#failed[@]} -gt 0 ]; then
  fail "scenarios answered wrongly: ${failed[*]}"
fi
started=$(now_ms)
luna_stop
stop_ms=$(( $(now_ms) - started ))
echo "lunad stopped ${stop_ms} ms after SIGTERM"
[ $stop_ms -lt 10000 ] || fail "lunad took ${stop_ms} ms to stop after the misbehaving clients had gone"
pass "lunad survived every misbehaving client and stopped cleanly"
