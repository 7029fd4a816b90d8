#!/usr/bin/env bash
# An export whose file grows while lunad serves it (issue 5: capacity changed): after the file
# is extended and lunad reloaded (SIGHUP), an iSCSI initiator that stayed logged in gets
# CAPACITY DATA HAS CHANGED (2A 09) once, READ CAPACITY reports the new size and blocks past
# the old end can be written and read (iscsi_capacity.py); a new NBD client sees the new size
# (nbdinfo). A file that shrinks is not followed: lunad logs it and keeps the size it serves.
source "$(dirname "$0")/lib.sh"
command -v nbdinfo >/dev/null || fail "nbdinfo is needed"

helper=$(cd "$(dirname "$0")" && pwd)/iscsi_capacity.py
truncate -s 16M "$WORK/disk.img"
NBD_PORT=$(free_port)
ISCSI_PORT=$(free_port)
IQN=iqn.2026-12.org.luna.test:grow$$
cat >"$WORK/lunad.ini" <<INI
[server]
nbd_listen = 127.0.0.1:$NBD_PORT
iscsi_listen = 127.0.0.1:$ISCSI_PORT
[export d]
path = $WORK/disk.img
[target $IQN]
lun.0 = d
INI
luna_start --config "$WORK/lunad.ini"
nbd_size() { nbdinfo --size "nbd://127.0.0.1:$NBD_PORT/d"; }
[ "$(nbd_size)" = 16777216 ] || fail "NBD size before: $(nbd_size)"

coproc GROW { exec "$SYSTEM_PYTHON" "$helper" 127.0.0.1 "$ISCSI_PORT" "$IQN" 2>&1; }
read -t 20 -r line <&"${GROW[0]}" || fail "the initiator did not log in"
[ "$line" = "ready 32768" ] || fail "the initiator before growing: $line"

truncate -s 48M "$WORK/disk.img"
kill -HUP "$LUNAD_PID"
for _ in $(seq 1 100); do
  grep -q "reload done" "$LUNAD_LOG" && break
  sleep 0.1
done
grep -q "export 'd': grew from 16777216 to 50331648 bytes" "$LUNAD_LOG" || fail "lunad did not log the growth"
echo go >&"${GROW[1]}"
read -t 20 -r line <&"${GROW[0]}" || fail "the initiator did not answer after the growth"
[ "$line" = "ok 32768 98304" ] || fail "the initiator after growing: $line"
pass "iSCSI: CAPACITY DATA HAS CHANGED, then 98304 blocks, the new last block written and read"
[ "$(nbd_size)" = 50331648 ] || fail "NBD size after: $(nbd_size)"
pass "NBD: a new client sees 48 MiB"

truncate -s 8M "$WORK/disk.img"
kill -HUP "$LUNAD_PID"
for _ in $(seq 1 100); do
  [ "$(grep -c "reload done" "$LUNAD_LOG")" -ge 2 ] && break
  sleep 0.1
done
grep -q "export 'd': .*disk.img shrank to 8388608 bytes; still serving 50331648 bytes" "$LUNAD_LOG" \
  || fail "lunad did not log the shrinking"
[ "$(nbd_size)" = 50331648 ] || fail "NBD size after shrinking: $(nbd_size)"
pass "a shrunk file is logged and not followed"
luna_stop
