#!/usr/bin/env bash
# Persistent reservations over iSCSI between two initiators (iscsi_reservations.py; issue 5):
# REGISTER with APTPL, RESERVE, RESERVATION CONFLICT for the other initiator, registrations
# that outlive a dropped connection, session reinstatement (a second login with the same ISID
# closes the first session), the Asynchronous Message every logged-in initiator gets when
# lunad stops, and, after the restart, the same registrations and reservation read back from
# the state directory (state_dir/reservations), then CLEAR with its unit attention; a malformed
# state file stops lunad at start-up with its name and line.
source "$(dirname "$0")/lib.sh"

helper=$(cd "$(dirname "$0")" && pwd)/iscsi_reservations.py
truncate -s 16M "$WORK/disk.img"
PORT=$(free_port)
IQN=iqn.2026-12.org.luna.test:reservations$$
run_lunad() {
  luna_start --state-dir "$WORK/state" --iscsi "127.0.0.1:$PORT" --target "$IQN=d" --export "d=$WORK/disk.img"
}

run_lunad
"$SYSTEM_PYTHON" "$helper" 127.0.0.1 "$PORT" "$IQN" before || fail "reservations before the restart"
state_file="$WORK/state/reservations/$IQN,0,d"
[ -f "$state_file" ] || fail "no state file at $state_file: $(ls -R "$WORK/state")"
grep -q "^reservation 1 iqn.2026-12.org.luna.test:host-a,i,0x80000000000a$" "$state_file" \
  || fail "the state file lacks A's reservation: $(cat "$state_file")"
pass "the reservations are saved in $state_file"

# SIGTERM while an initiator is logged in: it gets the Asynchronous Message, then lunad exits 0.
"$SYSTEM_PYTHON" "$helper" 127.0.0.1 "$PORT" "$IQN" shutdown >"$WORK/shutdown.out" 2>&1 &
helper_pid=$!
for _ in $(seq 1 100); do
  grep -q '^ready$' "$WORK/shutdown.out" && break
  kill -0 "$helper_pid" 2>/dev/null || break
  sleep 0.1
done
grep -q '^ready$' "$WORK/shutdown.out" || { cat "$WORK/shutdown.out"; fail "the shutdown helper did not log in"; }
luna_stop
wait "$helper_pid" || { cat "$WORK/shutdown.out"; fail "the initiator was not told of the shutdown"; }
cat "$WORK/shutdown.out"
grep -q "session reinstated" "$LUNAD_LOG" || fail "lunad did not log the reinstatement"

run_lunad
"$SYSTEM_PYTHON" "$helper" 127.0.0.1 "$PORT" "$IQN" after || fail "reservations after the restart"
luna_stop
[ ! -s "$state_file" ] || ! grep -q "^registration" "$state_file" \
  || fail "CLEAR left registrations in the state file: $(cat "$state_file")"
pass "APTPL reservations survived a restart of lunad and were cleared"

# A malformed state file stops lunad at start-up, naming the file and the line.
printf 'generation 1\nregistration 0x0 nobody\n' >"$state_file"
status=0
timeout 20 "$LUNAD" --state-dir "$WORK/state" --iscsi "127.0.0.1:$PORT" --target "$IQN=d" \
  --export "d=$WORK/disk.img" >"$WORK/refused.log" 2>&1 || status=$?
[ $status -ne 0 ] || fail "lunad started with a malformed reservations file"
grep -q "$IQN,0,d:2: expected 'registration 0xKEY NEXUS'" "$WORK/refused.log" \
  || fail "lunad's refusal does not name the file and line: $(cat "$WORK/refused.log")"
pass "a malformed reservations file stops lunad at start-up with its name and line"
