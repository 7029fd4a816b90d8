#!/usr/bin/env bash
# fio ioengine=nbd: 2 jobs at queue depth 32 writing their own regions with
# crc32c verification, then a mixed random read/write verify run.  Every
# job must finish with no error and have moved data.
source "$(dirname "$0")/lib.sh"

truncate -s 256M "$WORK/disk.img"
port=$(free_port)
luna_start --nbd "127.0.0.1:$port" --workers 2 --export "disk=$WORK/disk.img"
uri="nbd://127.0.0.1:$port/disk"

run_fio() {
  local name=$1; shift
  local status=0
  fio --name="$name" --ioengine=nbd --uri="$uri" --numjobs=2 --iodepth=32 --bs=4k \
    --size=32M --offset_increment=64M --verify=crc32c --verify_fatal=1 --do_verify=1 \
    --group_reporting=0 --output-format=json --output="$WORK/$name.json" "$@" \
    >"$WORK/$name.out" 2>&1 || status=$?
  if [ $status -ne 0 ]; then
    cat "$WORK/$name.out" "$WORK/$name.json" 2>/dev/null | tail -n 60
    fail "fio $name exited $status"
  fi
  "$SYSTEM_PYTHON" - "$WORK/$name.json" <<'PY' || { cat "$WORK/$name.out"; fail "fio $name: errors or no I/O"; }
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):])  # fio may print notes before the JSON
jobs = doc["jobs"]
bad = False
if len(jobs) != 2:
    print("expected 2 jobs, got", len(jobs)); bad = True
for job in jobs:
    written = job["write"]["io_bytes"]
    read = job["read"]["io_bytes"]
    print(f"  job {job['jobname']}: error {job['error']}, wrote {written >> 20} MiB, read {read >> 20} MiB "
          f"(write {job['write']['iops']:.0f} IOPS, read {job['read']['iops']:.0f} IOPS)")
    if job["error"] != 0 or written == 0 or read == 0:
        bad = True
sys.exit(1 if bad else 0)
PY
}

# Size-bound, not time-bound: fio verifies after the writes, and a time limit
# can end a slow (sanitizer) run before any verification read.
run_fio randwrite-verify --rw=randwrite
pass "fio randwrite + crc32c verify, 2 jobs x QD32"

# fio's two jobs connect at the same moment: they must land on different workers.
busy_workers=0
for task in /proc/$LUNAD_PID/task/*; do
  case $(cat "$task/comm") in
    lunad-w*) ticks=$(awk '{ print $14 + $15 }' "$task/stat")
              echo "  $(cat "$task/comm"): $ticks ticks"
              [ "$ticks" -gt 0 ] && busy_workers=$((busy_workers + 1)) ;;
  esac
done
[ "$busy_workers" -eq 2 ] || fail "two simultaneous connections were served by $busy_workers worker(s), not 2"
pass "simultaneous connections spread over both workers"
run_fio randrw-verify --rw=randrw --rwmixread=50
pass "fio randrw + crc32c verify, 2 jobs x QD32"

luna_alive
luna_stop
