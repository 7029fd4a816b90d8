#!/usr/bin/env bash
# The command line and configuration files: --check-config on good and bad
# files (exit status, file:line in the message), --help, --version, unknown
# flags, serving from a file, and the embedded default (when port 10809 is
# free): var/demo.img created sparse, 1 GiB, served as "demo".
source "$(dirname "$0")/lib.sh"

truncate -s 8M "$WORK/a.img" "$WORK/b.img"

# --help / --version
"$LUNAD" --help >"$WORK/help.out" 2>&1 || fail "lunad --help exited non-zero"
for word in --export --nbd --unix --config --check-config --workers --log-level --pidfile; do
  grep -q -- "$word" "$WORK/help.out" || fail "lunad --help does not mention $word"
done
"$LUNAD" --version >"$WORK/version.out" 2>&1 || fail "lunad --version exited non-zero"
grep -Eq '^lunad [0-9]+\.[0-9]+\.[0-9]+' "$WORK/version.out" || fail "lunad --version printed: $(cat "$WORK/version.out")"
pass "--help lists the options, --version prints the version"

# expect_refused DESCRIPTION PATTERN COMMAND...: non-zero exit, message matching PATTERN.
expect_refused() {
  local what=$1 pattern=$2; shift 2
  local status=0
  timeout 10 "$@" >"$WORK/refused.out" 2>&1 || status=$?
  [ $status -ne 0 ] || { cat "$WORK/refused.out"; fail "$what: exited 0"; }
  [ $status -ne 124 ] || fail "$what: still running after 10 s (expected an immediate error)"
  grep -Eq -- "$pattern" "$WORK/refused.out" || { cat "$WORK/refused.out"; fail "$what: message does not match '$pattern'"; }
  echo "  $what -> $(head -n 1 "$WORK/refused.out")"
}
expect_refused "unknown flag" "--bogus" "$LUNAD" --bogus
expect_refused "export without a path" "--export" "$LUNAD" --export justaname
expect_refused "bad cache mode" "cache|sometimes" "$LUNAD" --export "a=$WORK/a.img,cache=sometimes"
expect_refused "unknown export option" "colour" "$LUNAD" --export "a=$WORK/a.img,colour=blue"
expect_refused "missing image file" "missing.img" "$LUNAD" --nbd "127.0.0.1:$(free_port)" --export "a=$WORK/missing.img"
expect_refused "bad listen address" "nbd|address|port" "$LUNAD" --nbd "127.0.0.1:notaport" --export "a=$WORK/a.img"
expect_refused "bad worker count" "workers|lots" "$LUNAD" --workers lots --export "a=$WORK/a.img"
expect_refused "missing config file" "nope.ini" "$LUNAD" --check-config "$WORK/nope.ini"
pass "bad flags are refused with a message"

port=$(free_port)
cat >"$WORK/good.ini" <<INI
# A comment, then the server section.
[server]
nbd_listen = 127.0.0.1:$port
unix_socket = $WORK/lunad.sock
workers = 2
log_level = info

; exports, in order
[export alpha]
path = $WORK/a.img
description = first disk

[export beta]
path = $WORK/b.img
readonly = on
cache = none
aio = threads
discard = ignore
INI
"$LUNAD" --check-config "$WORK/good.ini" >"$WORK/check.out" 2>&1 || { cat "$WORK/check.out"; fail "--check-config rejects a good file"; }
pass "--check-config accepts a good file"

# bad_config NAME LINE CONTENT: --check-config must fail naming NAME.ini:LINE.
bad_config() {
  local name=$1 line=$2 content=$3
  printf '%b' "$content" >"$WORK/$name.ini"
  expect_refused "config $name" "$name\.ini:$line" "$LUNAD" --check-config "$WORK/$name.ini"
}
bad_config unknown-key 3 "[server]\nworkers = 1\nfavourite_colour = blue\n"
bad_config unknown-section 4 "[server]\nworkers = 1\n\n[exports alpha]\npath = $WORK/a.img\n"
bad_config bad-cache 3 "[export alpha]\npath = $WORK/a.img\ncache = sometimes\n"
bad_config bad-readonly 4 "[export alpha]\npath = $WORK/a.img\n\nreadonly = perhaps\n"
bad_config syntax 2 "[server]\nthis line has no equals sign\n"
bad_config bad-workers 2 "[server]\nworkers = -3\n[export alpha]\npath = $WORK/a.img\n"
bad_config duplicate-export 4 "[export alpha]\npath = $WORK/a.img\n\n[export alpha]\npath = $WORK/b.img\n"
bad_config bad-listen 2 "[server]\nnbd_listen = 127.0.0.1:99999\n[export alpha]\npath = $WORK/a.img\n"
pass "--check-config refuses bad files, naming file:line"

# Serving from the good file.
luna_start --config "$WORK/good.ini"
nbdinfo --list --json "nbd+unix:///?socket=$WORK/lunad.sock" >"$WORK/list.json" || fail "nbdinfo --list on the unix socket"
"$SYSTEM_PYTHON" - "$WORK/list.json" <<'PY' || fail "exports served from good.ini"
import json, sys
exports = {e["export-name"]: e for e in json.load(open(sys.argv[1]))["exports"]}
a, b = exports.get("alpha"), exports.get("beta")
ok = (set(exports) == {"alpha", "beta"} and a["description"] == "first disk" and not a["is_read_only"]
      and a["can_trim"] and b["is_read_only"] and b["block_size_minimum"] >= 512)
if not ok:
    print(json.dumps(exports, indent=1)); sys.exit(1)
PY
nbdinfo --size "nbd://127.0.0.1:$port/alpha" >/dev/null || fail "TCP listener from good.ini"
luna_stop
pass "serving from a configuration file: listeners and exports as written"

# Flags win over the file's listeners (--nbd replaces nbd_listen).
port2=$(free_port)
luna_start --config "$WORK/good.ini" --nbd "127.0.0.1:$port2" --workers 1 --log-level debug
nbdinfo --size "nbd://127.0.0.1:$port2/alpha" >/dev/null || fail "--nbd given with --config is not listening"
if nbdinfo --size "nbd://127.0.0.1:$port/alpha" >/dev/null 2>&1; then
  fail "--nbd should replace the file's nbd_listen, but $port still answers"
fi
luna_stop
pass "--nbd replaces the file's nbd_listen"

# The embedded default, only when its port is free (we must not disturb
# another server, and cannot choose the port).
if "$SYSTEM_PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 10809))" 2>/dev/null; then
  mkdir "$WORK/cwd"
  (cd "$WORK/cwd" && exec "$LUNAD" >>"$LUNAD_LOG" 2>&1) &
  LUNAD_PID=$!
  for _ in $(seq 1 100); do
    nbdinfo --size nbd://127.0.0.1:10809/demo >/dev/null 2>&1 && break
    kill -0 "$LUNAD_PID" 2>/dev/null || fail "lunad with no arguments exited"
    sleep 0.1
  done
  [ "$(nbdinfo --size nbd://127.0.0.1:10809/demo)" = 1073741824 ] || fail "the default export demo is not 1 GiB"
  [ -f "$WORK/cwd/var/demo.img" ] || fail "var/demo.img was not created in the working directory"
  [ "$(stat -c %s "$WORK/cwd/var/demo.img")" = 1073741824 ] || fail "var/demo.img is not 1 GiB"
  allocated=$(( $(stat -c %b "$WORK/cwd/var/demo.img") * $(stat -c %B "$WORK/cwd/var/demo.img") ))
  [ "$allocated" -lt $((1024 * 1024)) ] || fail "var/demo.img is not sparse ($allocated bytes allocated)"
  qemu-io -f raw -c 'write -P 0x42 0 64k' -c 'read -P 0x42 0 64k' nbd://127.0.0.1:10809/demo >"$WORK/demo.log" 2>&1 \
    && ! grep -qi 'fail\|error' "$WORK/demo.log" || { cat "$WORK/demo.log"; fail "I/O on the default export"; }
  luna_stop
  # A second start reuses the image.
  (cd "$WORK/cwd" && exec "$LUNAD" >>"$LUNAD_LOG" 2>&1) &
  LUNAD_PID=$!
  for _ in $(seq 1 100); do
    nbdinfo --size nbd://127.0.0.1:10809/demo >/dev/null 2>&1 && break
    sleep 0.1
  done
  qemu-io -r -f raw -c 'read -P 0x42 0 64k' nbd://127.0.0.1:10809/demo >"$WORK/demo.log" 2>&1 \
    && ! grep -qi 'fail\|error' "$WORK/demo.log" || { cat "$WORK/demo.log"; fail "the default image was not kept across restarts"; }
  luna_stop
  pass "no arguments: embedded default serves demo (1 GiB sparse var/demo.img) on 127.0.0.1:10809"
else
  echo "SKIP: port 10809 is in use; embedded default not checked"
fi
