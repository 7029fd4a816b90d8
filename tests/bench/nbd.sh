#!/usr/bin/env bash
# NBD benchmark (a benchmark, not a test: ctest does not run it).
#
# Serves one 1 GiB file of random data with lunad, qemu-nbd and nbdkit's file plugin, one server
# at a time on 127.0.0.1, drives each with fio's nbd engine (libnbd) and prints one Markdown table:
# IOPS, MB/s and p99 latency per job and server, lunad ÷ peer ratios, the server's CPU time per
# request (/proc/PID/stat over the measured window) and its system calls per request (perf).
# Then it holds 1000 idle NBD connections (handshake done with NBD_OPT_GO) to each server and
# reports the resident memory each connection costs.
#
# fio and the server share the same CPUs, so absolute numbers are capped by the client; compare
# ratios and CPU per request, not raw IOPS across machines.
#
# Environment:
#   BENCH_SERVERS="lunad qemu-nbd nbdkit"  servers to run, in this order
#   BENCH_RUNTIME=10                       measured seconds per job (after BENCH_RAMP=2 s of ramp)
#   BENCH_JOBS="..."                       subset of the job names below (default: all)
#   BENCH_ROUNDS=1                         repeat every job; the report keeps each median run
#   BENCH_IDLE_CONNECTIONS=1000            idle connections for the memory test (0 skips it)
#   BENCH_IDLE_SERVERS                     servers for the memory test (default: BENCH_SERVERS)
#   BENCH_SYSCALLS=1                       count server system calls with perf (0: don't)
#   BENCH_SIZE=1G                          size of the served file
#   BENCH_DIR                              where the temporary directory goes (default /var/tmp)
#   BENCH_RESULTS_DIR                      if set, raw fio JSON, TSVs and server logs are kept there
#   LUNAD=path                             lunad binary (default: build*/bin/lunad of this tree)
#   BENCH_LUNAD_OPTIONS="cache=writeback,aio=io_uring"   appended to lunad's --export
#   BENCH_LUNAD_ARGS=""                    extra lunad arguments (e.g. "--workers 2")
#   BENCH_QEMU_AIO=io_uring                qemu-nbd --aio mode (threads | io_uring)

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=/usr/bin/python3 # Debian's python, where python3-libnbd is installed

runtime=${BENCH_RUNTIME:-10}
rounds=${BENCH_ROUNDS:-1}
ramp=${BENCH_RAMP:-2}
servers=${BENCH_SERVERS:-lunad qemu-nbd nbdkit}
idle_connections=${BENCH_IDLE_CONNECTIONS:-1000}
idle_servers=${BENCH_IDLE_SERVERS:-$servers}
count_syscalls=${BENCH_SYSCALLS:-1}
size=${BENCH_SIZE:-1G}
lunad_options=${BENCH_LUNAD_OPTIONS:-cache=writeback,aio=io_uring}
lunad_args=${BENCH_LUNAD_ARGS:-}
qemu_aio=${BENCH_QEMU_AIO:-io_uring}
export_name=bench

# name:fio arguments. The 2-connection job runs two fio jobs, each with its own libnbd handle.
all_jobs=(
    "randread-4k-qd32:--rw=randread --bs=4k --iodepth=32"
    "randwrite-4k-qd32:--rw=randwrite --bs=4k --iodepth=32"
    "read-1m-qd8:--rw=read --bs=1M --iodepth=8"
    "write-1m-qd8:--rw=write --bs=1M --iodepth=8"
    "randread-4k-qd32-2conn:--rw=randread --bs=4k --iodepth=32 --numjobs=2"
)
selected_jobs=${BENCH_JOBS:-}

BENCH_NAME=nbd.sh
source "$here/lib.sh"

for tool in fio jq nbdinfo; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian packages: fio jq libnbd-bin)"
done
[[ -x $python ]] || die "$python is missing"

# --- cleanup: every process we start is tracked here and stopped on any exit ---------------
work=
server_pid=
helper_pid=
fio_pid=
perf_pid=
control_fd=

cleanup() {
    [[ -n $control_fd ]] && exec {control_fd}>&- 2>/dev/null
    stop_pid "$helper_pid" 5
    stop_pid "$perf_pid" 5
    stop_pid "$fio_pid" 5
    stop_pid "$server_pid" 10
    [[ -n $work && -d $work ]] && rm -rf "$work"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- helpers -----------------------------------------------------------------------------

# start_server NAME PORT [MAX_CONNECTIONS]: starts it in the background, sets server_pid, waits
# until it answers an NBD handshake. Returns non-zero (server log shown) if it never does.
start_server() {
    local name=$1 port=$2 connections=${3:-8} log="$work/$1.log"
    case $name in
    lunad)
        # shellcheck disable=SC2086 # lunad_args is a list of words on purpose
        "$lunad" --nbd "127.0.0.1:$port" --export "$export_name=$image,$lunad_options" $lunad_args \
            >>"$log" 2>&1 &
        ;;
    qemu-nbd)
        qemu-nbd -f raw -t -x "$export_name" -b 127.0.0.1 -p "$port" --cache=writeback \
            --aio="$qemu_aio" --shared="$connections" "$image" >>"$log" 2>&1 &
        ;;
    nbdkit)
        # -f: foreground; the file plugin's thread model is parallel; any export name is accepted.
        nbdkit -f --exit-with-parent -p "$port" -i 127.0.0.1 file "$image" >>"$log" 2>&1 &
        ;;
    *) die "unknown server $name" ;;
    esac
    server_pid=$!
    local uri="nbd://127.0.0.1:$port/$export_name" tries=0
    until nbdinfo --size "$uri" >/dev/null 2>&1; do
        if ! kill -0 "$server_pid" 2>/dev/null || ((++tries > 200)); then
            say "nbd.sh: $name did not come up on port $port; its log:"
            tail -n 20 "$log" >&2 || true
            stop_pid "$server_pid"
            server_pid=
            return 1
        fi
        sleep 0.05
    done
}

stop_server() {
    stop_pid "$server_pid" 10
    server_pid=
}

# run_job SERVER URI JOB FIO-ARGS...: appends one line to results.tsv.
run_job() {
    local server=$1 uri=$2 job=$3
    shift 3
    local json="$work/$server.$job.$round.json" perf_out="$work/$server.$job.$round.perf"
    timeout --kill-after=10 $((ramp + runtime + 60)) \
        fio --name="$job" --ioengine=nbd --uri="$uri" --time_based --runtime="$runtime" \
        --ramp_time="$ramp" --group_reporting --output-format=json --output="$json" "$@" \
        >"$work/$server.$job.$round.fio.log" 2>&1 &
    fio_pid=$!

    # The CPU and syscall window opens when the ramp ends and closes when fio exits. Results are
    # rates (per second of window ÷ requests per second), so the few milliseconds by which the
    # window and fio's own measured period differ hardly matter: the server is busy throughout.
    sleep "$ramp"
    local ticks_before started ticks_after finished
    ticks_before=$(cpu_ticks "$server_pid")
    started=$(now_ns)
    perf_pid=
    if [[ $count_syscalls == 1 ]]; then
        perf stat -x, -o "$perf_out" -e raw_syscalls:sys_enter -p "$server_pid" 2>/dev/null &
        perf_pid=$!
    fi
    local fio_status=0
    wait "$fio_pid" || fio_status=$?
    fio_pid=
    ticks_after=$(cpu_ticks "$server_pid")
    finished=$(now_ns)
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        perf_pid=
    fi
    if ((fio_status != 0)) || [[ ! -s $json ]]; then
        say "nbd.sh: fio failed for $server $job (status $fio_status):"
        tail -n 20 "$work/$server.$job.$round.fio.log" >&2 || true
        printf '%s\t%s\t-\t-\t-\t-\t-\n' "$server" "$job" >>"$work/results.tsv"
        return 0
    fi

    local iops mbps p99_us
    read -r iops mbps p99_us < <(jq -r '.jobs[0] as $j
        | (if $j.read.total_ios > 0 then $j.read else $j.write end) as $d
        | [($j.read.iops + $j.write.iops), (($j.read.bw_bytes + $j.write.bw_bytes) / 1e6),
           ($d.clat_ns.percentile["99.000000"] / 1000)] | @tsv' "$json")

    local syscalls=-
    if [[ -s $perf_out ]]; then
        syscalls=$(awk -F, '/raw_syscalls:sys_enter/ && $1 ~ /^[0-9]+$/ { print $1 }' "$perf_out")
        [[ -n $syscalls ]] || syscalls=-
    fi
    awk -v s="$server" -v j="$job" -v iops="$iops" -v mbps="$mbps" -v p99="$p99_us" \
        -v ticks=$((ticks_after - ticks_before)) -v hz="$clock_ticks" \
        -v ns=$((finished - started)) -v sc="$syscalls" 'BEGIN {
            seconds = ns / 1e9
            cpu = (iops > 0) ? (ticks * 1e6 / hz) / seconds / iops : "-"
            sys = (sc != "-" && iops > 0) ? sc / seconds / iops : "-"
            printf "%s\t%s\t%.0f\t%.1f\t%.0f\t%s\t%s\n", s, j, iops, mbps, p99, cpu, sys
        }' >>"$work/results.tsv"
}

# measure_idle SERVER: RSS before and after opening idle_connections handshaken connections.
measure_idle() {
    local server=$1 port
    port=$(free_port)
    # qemu-nbd refuses clients beyond --shared; leave room for the readiness probe.
    start_server "$server" "$port" $((idle_connections + 8)) || return 0
    local uri="nbd://127.0.0.1:$port/$export_name" before after
    sleep 0.5
    before=$(rss_kib "$server_pid")
    say "== $server: $idle_connections idle connections (RSS before: $before KiB)"
    rm -f "$work/idle.control"
    mkfifo "$work/idle.control"
    "$python" "$here/nbd_idle_connections.py" "$uri" "$idle_connections" \
        <"$work/idle.control" >"$work/idle.out" 2>"$work/idle.err" &
    helper_pid=$!
    exec {control_fd}>"$work/idle.control"
    local tries=0
    until grep -q '^ready' "$work/idle.out" 2>/dev/null; do
        if ! kill -0 "$helper_pid" 2>/dev/null || ((++tries > 3000)); then
            say "nbd.sh: idle connections to $server failed:"
            tail -n 5 "$work/idle.err" >&2 || true
            break
        fi
        sleep 0.1
    done
    if grep -q '^ready' "$work/idle.out"; then
        sleep 1 # let the server finish any per-connection set-up after the handshake
        after=$(rss_kib "$server_pid")
        printf '%s\t%s\t%s\t%s\n' "$server" "$idle_connections" "$before" "$after" >>"$work/memory.tsv"
    fi
    exec {control_fd}>&-
    control_fd=
    stop_pid "$helper_pid" 30
    helper_pid=
    stop_server
}

# --- main --------------------------------------------------------------------------------
clock_ticks=$(getconf CLK_TCK)
# 1000 connections need 1000+ descriptors in the helper and in the server (inherited).
ulimit -n $((idle_connections + 4096)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [[ $count_syscalls == 1 ]] && ! perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
    say "nbd.sh: perf cannot count raw_syscalls:sys_enter here; syscalls/req will be '-'"
    count_syscalls=0
fi

lunad=
run_servers=()
for server in $servers; do
    case $server in
    lunad)
        if lunad=$(built_binary lunad LUNAD); then
            run_servers+=(lunad)
        else
            say "nbd.sh: no lunad binary (set LUNAD= or build it); skipping lunad"
        fi
        ;;
    qemu-nbd | nbdkit)
        if command -v "$server" >/dev/null; then
            run_servers+=("$server")
        else
            say "nbd.sh: $server missing, skipped"
        fi
        ;;
    *) die "unknown server '$server' (lunad, qemu-nbd, nbdkit)" ;;
    esac
done
((${#run_servers[@]} > 0)) || die "no server to run"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/luna-bench.XXXXXX")
image="$work/image.raw"
: >"$work/results.tsv"
: >"$work/memory.tsv"
say "== writing $size of random data to $image"
head -c "$size" /dev/urandom >"$image"

jobs_to_run=()
for entry in "${all_jobs[@]}"; do
    name=${entry%%:*}
    if [[ -z $selected_jobs || " $selected_jobs " == *" $name "* ]]; then
        jobs_to_run+=("$entry")
    fi
done

# Job-major order with a fresh server per run: the machine is shared (other builds and tests may
# run at the same time), so interleaving the servers spreads any outside load over all of them
# instead of penalising whichever server happened to run during a busy minute. With
# BENCH_ROUNDS > 1 the report keeps each server's median run per job.
for ((round = 1; round <= rounds; round++)); do
    for entry in "${jobs_to_run[@]}"; do
        job=${entry%%:*}
        for server in "${run_servers[@]}"; do
            port=$(free_port)
            if ! start_server "$server" "$port"; then
                printf '%s\t%s\t-\t-\t-\t-\t-\n' "$server" "$job" >>"$work/results.tsv"
                continue
            fi
            say "== round $round/$rounds, $server: $job (${ramp}s ramp + ${runtime}s)"
            # shellcheck disable=SC2086 # the job's fio arguments are a list of words
            run_job "$server" "nbd://127.0.0.1:$port/$export_name" "$job" ${entry#*:}
            if ! kill -0 "$server_pid" 2>/dev/null; then
                say "nbd.sh: $server died during $job; its log:"
                tail -n 20 "$work/$server.log" >&2 || true
                server_pid=
            fi
            stop_server
        done
    done
done

if ((idle_connections > 0)); then
    for server in $idle_servers; do
        [[ " ${run_servers[*]} " == *" $server "* ]] && measure_idle "$server"
    done
fi

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "NBD benchmark: ${runtime}s per job after ${ramp}s ramp, $rounds round(s), $size file, $(nproc) CPUs shared by fio and server"
echo "load average before: $load_before, after: $load_after (anything above ~2 means other work shared the CPUs)"
for server in "${run_servers[@]}"; do
    case $server in
    lunad) echo "lunad: $lunad ($lunad_options${lunad_args:+ $lunad_args})" ;;
    qemu-nbd) echo "qemu-nbd: --aio=$qemu_aio --cache=writeback" ;;
    nbdkit) echo "nbdkit: file plugin" ;;
    esac
done
echo
"$python" "$here/nbd_report.py" "$work/results.tsv" "$work/memory.tsv"

if [[ -n ${BENCH_RESULTS_DIR:-} ]]; then
    mkdir -p "$BENCH_RESULTS_DIR"
    cp "$work"/*.tsv "$work"/*.json "$work"/*.log "$BENCH_RESULTS_DIR"/ 2>/dev/null || true
    say "== raw results kept in $BENCH_RESULTS_DIR"
fi
