#!/usr/bin/env bash
# systemd integration without systemd: socket activation through
# systemd-socket-activate (LISTEN_FDS), and readiness notification to a
# NOTIFY_SOCKET we listen on ourselves (READY=1 once serving, RELOADING=1 /
# READY=1 around a SIGHUP, STOPPING=1 on SIGTERM).
source "$(dirname "$0")/lib.sh"

here=$(dirname "$0")
truncate -s 16M "$WORK/disk.img"
port=$(free_port)

wait_for_line() { # file pattern what
  for _ in $(seq 1 200); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  cat "$1" 2>/dev/null; fail "$3"
}

# --- Readiness notification --------------------------------------------------
"$SYSTEM_PYTHON" "$here/notify_listener.py" "$WORK/notify.sock" "$WORK/notify.log" &
listener=$!
wait_for_line "$WORK/notify.log" listening "the notify listener did not start"
NOTIFY_SOCKET=$WORK/notify.sock luna_start --nbd "127.0.0.1:$port" --export "disk=$WORK/disk.img"
wait_for_line "$WORK/notify.log" '^READY=1$' "lunad sent no READY=1 to NOTIFY_SOCKET"
# Ready means serving: the very first attempt must connect.
nbdinfo --size "nbd://127.0.0.1:$port/disk" >/dev/null || fail "READY=1 was sent but lunad does not serve"
kill -HUP "$LUNAD_PID"
wait_for_line "$WORK/notify.log" '^RELOADING=1$' "no RELOADING=1 on SIGHUP"
[ "$(grep -c '^READY=1$' "$WORK/notify.log")" -ge 2 ] || { sleep 0.5; [ "$(grep -c '^READY=1$' "$WORK/notify.log")" -ge 2 ]; } \
  || { cat "$WORK/notify.log"; fail "no READY=1 after the reload"; }
luna_stop
wait $listener || { cat "$WORK/notify.log"; fail "lunad sent no STOPPING=1 on SIGTERM"; }
echo "notifications: $(tr '\n' ' ' <"$WORK/notify.log")"
pass "sd_notify: READY=1 when serving, RELOADING=1 and READY=1 on SIGHUP, STOPPING=1 on SIGTERM"

# --- Socket activation -------------------------------------------------------
if ! command -v systemd-socket-activate >/dev/null; then
  echo "SKIP: systemd-socket-activate not installed (package systemd); socket activation not checked"
  exit 0
fi
pidfile=$WORK/lunad.pid
systemd-socket-activate -l "127.0.0.1:$port" "$LUNAD" --pidfile "$pidfile" --export "disk=$WORK/disk.img" \
  >>"$LUNAD_LOG" 2>&1 &
LUNAD_PID=$!
wait_for_line "$LUNAD_LOG" "Listening on" "systemd-socket-activate did not listen"
# The connection that triggers the activation must itself be served.
qemu-io -f raw -c 'write -P 0x71 0 64k' -c 'read -P 0x71 0 64k' "nbd://127.0.0.1:$port/disk" >"$WORK/io.log" 2>&1 \
  && ! grep -qi 'fail\|error' "$WORK/io.log" || { cat "$WORK/io.log"; fail "the activating connection was not served"; }
[ -s "$pidfile" ] || fail "lunad wrote no pidfile under socket activation"
[ "$(cat "$pidfile")" = "$LUNAD_PID" ] || fail "pidfile $(cat "$pidfile") is not the activated process $LUNAD_PID"
# lunad must use the inherited socket, not open its default 127.0.0.1:10809.
listening=$(ss -H -ltnp | grep "pid=$LUNAD_PID," || true)
echo "lunad listens on: $listening"
[ "$(echo "$listening" | grep -c .)" = 1 ] && echo "$listening" | grep -q "127.0.0.1:$port " \
  || fail "under socket activation lunad should listen only on the inherited 127.0.0.1:$port"
kill -HUP "$LUNAD_PID"
sleep 0.3
nbdinfo --size "nbd://127.0.0.1:$port/disk" >/dev/null || fail "the inherited socket stopped serving after SIGHUP"
luna_stop
cmp -n 65536 "$WORK/disk.img" <(head -c 65536 /dev/zero | tr '\0' 'q') || fail "data written under socket activation is not in the file"
pass "socket activation: the inherited socket is served, also after SIGHUP; exit 0 on SIGTERM"
