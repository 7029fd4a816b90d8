# Shared helpers for integration tests (bash).  Source it, then:
#   luna_start [lunad args...]   start lunad in the background, wait until it serves
#   luna_stop                    SIGTERM, wait, fail unless it exited 0
#   luna_crash [IMAGE...]        SIGKILL, wait, and wait until the images' locks are gone
#   free_port                    print a TCP port nobody listens on
#   fail MESSAGE / pass MESSAGE
#   need_luna_img CMD...         set LUNA_IMG, fail unless the commands exist
#   fio_json_ok FILE             a fio JSON result without error, with verified data
# Environment from ctest: LUNAD (path to the binary), LUNA_TEST_BUILD (build dir).
# Each test gets its own scratch directory $WORK, removed on exit.
set -euo pipefail

LUNAD=${LUNAD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/bin/lunad}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/luna-test.XXXXXX")
LUNAD_PID=
LUNAD_LOG=$WORK/lunad.log
# Debian's Python has python3-libnbd; the pyenv python3 on PATH may not.
SYSTEM_PYTHON=/usr/bin/python3
# Helpers import each other (iscsi_pdu.py): no __pycache__ left in the source tree.
export PYTHONDONTWRITEBYTECODE=1

# _luna_cleanup [STATUS]: a test's own EXIT trap passes the status it saw (under set -e, the
# usual `(exit $status)` before the call would end the trap right there).
_luna_cleanup() {
  local status=${1:-$?}
  if [ -n "$LUNAD_PID" ] && kill -0 "$LUNAD_PID" 2>/dev/null; then
    kill -KILL "$LUNAD_PID" 2>/dev/null || true
  fi
  if [ $status -ne 0 ] && [ -f "$LUNAD_LOG" ]; then
    echo "--- lunad log (last 40 lines) ---"; tail -n 40 "$LUNAD_LOG"
  fi
  rm -rf "$WORK"
}
trap _luna_cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

free_port() {
  "$SYSTEM_PYTHON" - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
}

# Start lunad with the given arguments plus a pidfile; wait until the pidfile
# exists (lunad writes it once every export is open and every socket listens).
luna_start() {
  local pidfile=$WORK/lunad.pid
  rm -f "$pidfile"
  "$LUNAD" --pidfile "$pidfile" "$@" >>"$LUNAD_LOG" 2>&1 &
  LUNAD_PID=$!
  for _ in $(seq 1 200); do
    [ -s "$pidfile" ] && return 0
    kill -0 "$LUNAD_PID" 2>/dev/null || { cat "$LUNAD_LOG"; fail "lunad exited during start-up"; }
    sleep 0.05
  done
  fail "lunad did not start within 10 s"
}

# Stop lunad with SIGTERM; it must exit 0 within 30 s.
luna_stop() {
  [ -n "$LUNAD_PID" ] || return 0
  kill -TERM "$LUNAD_PID"
  local status=0
  for _ in $(seq 1 300); do
    kill -0 "$LUNAD_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$LUNAD_PID" 2>/dev/null; then
    fail "lunad did not stop within 30 s of SIGTERM"
  fi
  wait "$LUNAD_PID" || status=$?
  LUNAD_PID=
  [ $status -eq 0 ] || fail "lunad exited with status $status after SIGTERM"
}

# Kill lunad with SIGKILL, as a crash would.  The process is gone when wait
# returns, but io_uring requests still in flight keep its files open (and their
# OFD locks held) until the kernel tears the ring down a moment later, so wait
# until each IMAGE can be opened by qemu-img again.
luna_crash() {
  kill -KILL "$LUNAD_PID"
  wait "$LUNAD_PID" 2>/dev/null || true
  LUNAD_PID=
  local image
  for image in "$@"; do
    for _ in $(seq 1 100); do
      qemu-img info "$image" >/dev/null 2>&1 && break
      sleep 0.1
    done
    qemu-img info "$image" >/dev/null || fail "$image is still locked 10 s after lunad was killed"
  done
}

# Assert lunad is still running (after a misbehaving client, say).
luna_alive() {
  kill -0 "$LUNAD_PID" 2>/dev/null || fail "lunad is no longer running"
}

# need_luna_img [COMMAND...]: set LUNA_IMG (this build's luna-img unless given) and fail
# unless it and every COMMAND (qemu-img, qemu-io, jq, ...) are there.
need_luna_img() {
  LUNA_IMG=${LUNA_IMG:-${LUNA_TEST_BUILD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build}/bin/luna-img}
  [ -x "$LUNA_IMG" ] || fail "luna-img not found at $LUNA_IMG"
  local command
  for command in "$@"; do
    command -v "$command" >/dev/null || fail "$command is needed"
  done
}

# fio_json_ok FILE: the single-job fio run whose --output-format=json output is FILE had no
# error and verified data (prints what it moved).
fio_json_ok() {
  "$SYSTEM_PYTHON" - "$1" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]  # fio may print notes before the JSON
written, verified = job["write"]["io_bytes"] >> 20, job["read"]["io_bytes"] >> 20
print(f"  fio: error {job['error']}, wrote {written} MiB, verified {verified} MiB")
sys.exit(1 if job["error"] or not job["read"]["io_bytes"] else 0)
PY
}
