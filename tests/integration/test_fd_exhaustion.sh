#!/usr/bin/env bash
# Out of file descriptors: lunad must pause accepting (not spin on a listening
# socket that stays readable), keep serving the clients it has, and accept
# again once descriptors are free.
source "$(dirname "$0")/lib.sh"

truncate -s 16M "$WORK/disk.img"
port=$(free_port)
# A low descriptor limit for lunad only (the subshell's ulimit applies to it).
(ulimit -n 48; exec "$LUNAD" --pidfile "$WORK/lunad.pid" --nbd "127.0.0.1:$port" \
   --export "disk=$WORK/disk.img" >>"$LUNAD_LOG" 2>&1) &
LUNAD_PID=$!
for _ in $(seq 1 200); do [ -s "$WORK/lunad.pid" ] && break; sleep 0.05; done
[ -s "$WORK/lunad.pid" ] || fail "lunad did not start"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$LUNAD_PID/stat"; }

# 80 connections that stay open and silent: more than lunad has descriptors for.
"$SYSTEM_PYTHON" - "$port" >"$WORK/hold.log" 2>&1 <<'PY' &
import socket, sys, time
conns = []
for _ in range(80):
    try:
        conns.append(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2))
    except OSError:
        pass
print(f"holding {len(conns)} connections", flush=True)
time.sleep(4)
PY
holder=$!
sleep 1
before=$(cpu_ticks)
sleep 2
after=$(cpu_ticks)
used=$((after - before))
echo "lunad CPU while out of descriptors: $used ticks in 2 s"
[ "$used" -lt 40 ] || fail "lunad spins while out of descriptors ($used ticks of CPU in 2 s)"
grep -q "pausing new connections" "$LUNAD_LOG" || fail "lunad did not report the descriptor shortage"
wait $holder
cat "$WORK/hold.log"

# The silent clients are gone: lunad accepts and serves again.
sleep 1
nbdinfo --size "nbd://127.0.0.1:$port/disk" >/dev/null || fail "lunad does not serve after descriptors came back"
luna_alive
luna_stop
pass "descriptor exhaustion: accepting paused, no spinning, serving again afterwards"
