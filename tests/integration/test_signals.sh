#!/usr/bin/env bash
# Signals.  SIGTERM with 32 writes in flight: lunad exits 0 and every write
# it acknowledged is in the file.  SIGHUP with a configuration file: an added
# export appears, a removed one refuses new clients while a client already on
# it keeps working, an unchanged one is undisturbed, and a broken file keeps
# the old configuration running.
source "$(dirname "$0")/lib.sh"

here=$(dirname "$0")

# --- SIGTERM with requests in flight -----------------------------------------
# Small writes (many requests queued) and 1 MiB writes (the client is nearly
# always in the middle of sending a payload when the signal comes).  The spec
# (proto.md, "Terminating the transmission phase"): the server SHOULD let
# in-flight requests finish, and MAY answer later ones with NBD_ESHUTDOWN; it
# must not leave the client hanging.
truncate -s 2G "$WORK/term.img"
socket=$WORK/lunad.sock
for block in 16384 1048576 1048576 1048576; do
  luna_start --unix "$socket" --export "term=$WORK/term.img"
  rm -f "$WORK/writer.out" "$WORK/acked.log"
  "$SYSTEM_PYTHON" "$here/acked_writes.py" write "nbd+unix:///term?socket=$socket" "$WORK/acked.log" $block \
    >"$WORK/writer.out" 2>&1 &
  writer=$!
  for _ in $(seq 1 200); do
    grep -q flowing "$WORK/writer.out" && break
    kill -0 $writer 2>/dev/null || { cat "$WORK/writer.out"; fail "the writer died before writes were flowing"; }
    sleep 0.05
  done
  grep -q flowing "$WORK/writer.out" || { cat "$WORK/writer.out"; fail "writes never started flowing"; }
  started=$(date +%s%N)
  luna_stop   # SIGTERM; fails unless lunad exits 0 within 30 s
  stop_ms=$(( ($(date +%s%N) - started) / 1000000 ))
  wait $writer || { cat "$WORK/writer.out"; fail "the writer saw no acknowledged write"; }
  cat "$WORK/writer.out"
  echo "lunad stopped ${stop_ms} ms after SIGTERM"
  "$SYSTEM_PYTHON" "$here/acked_writes.py" verify "$WORK/acked.log" "$WORK/term.img" \
    || fail "writes of $block bytes acknowledged before SIGTERM are missing from the file"
  [ $stop_ms -lt 10000 ] || fail "SIGTERM with $block-byte writes in flight: lunad took ${stop_ms} ms to stop \
(a client still sending must be answered, e.g. NBD_ESHUTDOWN, not left to a timeout)"
  pass "SIGTERM with 32 writes of $block bytes in flight: exit 0 in ${stop_ms} ms, every acknowledged write is in the file"
done

# --- SIGHUP reload -----------------------------------------------------------
port=$(free_port)
for name in one two three; do truncate -s 16M "$WORK/$name.img"; done
write_config() { # export names...
  {
    echo "[server]"
    echo "nbd_listen = 127.0.0.1:$port"
    echo "log_level = debug"
    for name in "$@"; do
      echo; echo "[export $name]"; echo "path = $WORK/$name.img"; echo "description = disk $name"
    done
  } >"$WORK/lunad.ini.new"
  mv "$WORK/lunad.ini.new" "$WORK/lunad.ini"
}
export_list() {
  nbdinfo --list --json "nbd://127.0.0.1:$port/" \
    | "$SYSTEM_PYTHON" -c 'import json, sys; print(" ".join(sorted(e["export-name"] for e in json.load(sys.stdin)["exports"])))'
}
wait_for_list() { # expected list
  local got=
  for _ in $(seq 1 100); do
    got=$(export_list 2>/dev/null || true)
    [ "$got" = "$1" ] && return 0
    sleep 0.05
  done
  fail "exports after reload: got '$got', expected '$1'"
}

write_config one two
luna_start --config "$WORK/lunad.ini"
[ "$(export_list)" = "one two" ] || fail "initial exports: $(export_list)"

# Clients holding connections across the reload: on a kept and a removed export.
"$SYSTEM_PYTHON" "$here/hold_handle.py" "nbd://127.0.0.1:$port/one" "$WORK/go" >"$WORK/hold-one.out" 2>&1 &
hold_one=$!
"$SYSTEM_PYTHON" "$here/hold_handle.py" "nbd://127.0.0.1:$port/two" "$WORK/go" >"$WORK/hold-two.out" 2>&1 &
hold_two=$!
for _ in $(seq 1 200); do
  grep -q connected "$WORK/hold-one.out" && grep -q connected "$WORK/hold-two.out" && break
  sleep 0.05
done
grep -q connected "$WORK/hold-one.out" && grep -q connected "$WORK/hold-two.out" \
  || { cat "$WORK"/hold-*.out; fail "the holding clients did not connect"; }

write_config one three
kill -HUP "$LUNAD_PID"
wait_for_list "one three"
luna_alive
pass "SIGHUP: export three added, two removed (nbdinfo --list)"

if nbdinfo --size "nbd://127.0.0.1:$port/two" >"$WORK/two.out" 2>&1; then
  fail "a new client still reaches the removed export two"
fi
[ "$(nbdinfo --size "nbd://127.0.0.1:$port/three")" = $((16 * 1024 * 1024)) ] || fail "the added export three is not served"
qemu-io -f raw -c 'write -P 0x33 0 64k' -c 'read -P 0x33 0 64k' "nbd://127.0.0.1:$port/three" >"$WORK/three.log" 2>&1 \
  && ! grep -qi 'fail\|error' "$WORK/three.log" || { cat "$WORK/three.log"; fail "I/O on the added export three"; }
pass "new clients: removed export refused, added export served"

touch "$WORK/go"
wait $hold_one || { cat "$WORK/hold-one.out"; fail "a client of the kept export one broke across the reload"; }
wait $hold_two || { cat "$WORK/hold-two.out"; fail "a client connected to export two before its removal broke"; }
cmp -n 65536 "$WORK/two.img" <(head -c 65536 /dev/zero | tr '\0' 'c') \
  || fail "the removed export's connected client wrote, but the data is not in two.img"
pass "connected clients of kept and removed exports keep working after the reload"

# A broken configuration: the reload fails, the old configuration stays.
printf '[server]\nnbd_listen = 127.0.0.1:%s\n\n[export four]\npath = %s\nno_such_key = 1\n' "$port" "$WORK/one.img" \
  >"$WORK/lunad.ini"
kill -HUP "$LUNAD_PID"
sleep 0.5
luna_alive
[ "$(export_list)" = "one three" ] || fail "after a bad reload the exports are '$(export_list)', expected 'one three'"
grep -q "lunad.ini:6" "$LUNAD_LOG" || { tail "$LUNAD_LOG"; fail "the failed reload is not logged with file:line (lunad.ini:6)"; }
qemu-io -r -f raw -c 'read -P 0x33 0 64k' "nbd://127.0.0.1:$port/three" >"$WORK/three.log" 2>&1 \
  && ! grep -qi 'fail\|error' "$WORK/three.log" || { cat "$WORK/three.log"; fail "export three after a bad reload"; }
pass "a bad configuration on SIGHUP is logged and the old one keeps serving"

# And a good one after the bad one is taken again.
write_config three one
kill -HUP "$LUNAD_PID"
wait_for_list "one three"
write_config two
kill -HUP "$LUNAD_PID"
wait_for_list "two"
pass "reload after a failed reload works"

luna_stop
