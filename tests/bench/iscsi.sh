#!/usr/bin/env bash
# iSCSI benchmark (a benchmark, not a test: ctest does not run it, and it asserts nothing about
# speed).
#
# Serves one 1 GiB file of random data (every block allocated, so reads hit real blocks) on
# 127.0.0.1 with lunad's iSCSI target and with tgt (tgtd 1.0.x, started here with a scratch
# control port), one server at a time, and drives each with libiscsi initiators:
#   perf-read-1m-qd16   iscsi-perf (libiscsi-bin): sequential READ 16 of 1 MiB, 16 in flight
#   randread-4k-qd16    qemu-img bench (QEMU's iscsi driver, libiscsi), 4 KiB reads
#   randwrite-4k-qd16   the same, 4 KiB writes
#   read-1m-qd16        qemu-img bench, sequential 1 MiB reads
#   write-1m-qd16       qemu-img bench, sequential 1 MiB writes
# The same workloads run against lunad's NBD listener (qemu-img bench on nbd://, fio's nbd
# engine for the iscsi-perf row), which gives lunad's own NBD figure: the iSCSI ÷ NBD ratio is the
# cost of lunad's iSCSI layer over its NBD one (client included: libiscsi and QEMU's NBD client
# are different code).
#
# Servers (BENCH_SERVERS, in this order):
#   lunad         lunad --iscsi, the export with BENCH_LUNAD_OPTIONS (page cache, see below)
#   tgt           tgtd, default backing store (rdwr: pread/pwrite from 16 threads, page cache)
#   tgt-aio       tgtd --bstype aio (Linux AIO; tgt opens the file with O_DIRECT, checked in
#                 /proc/PID/fdinfo: it measures the disk, not the server's request path)
#   lunad-direct  lunad --iscsi with cache=none (O_DIRECT too): tgt-aio's like-for-like peer
#   nbd           lunad --nbd with BENCH_LUNAD_OPTIONS (the same process also serves iSCSI)
#
# Cache mode: lunad runs with cache=writeback,aio=io_uring, as in tests/bench/nbd.sh and
# qcow2.sh, because tgt's rdwr backing store goes through the page cache too (pread/pwrite on a
# file opened without O_DIRECT, WCE on): that is the fair pair, and the 1 GiB file stays cached,
# so the rows measure the servers' request paths. cache=none pairs with tgt-aio (both O_DIRECT).
#
# qemu-img bench has no random mode: "random" 4 KiB requests advance by a fixed stride of 100003
# blocks (-S 409612288), an odd number of blocks, so they visit all 262144 blocks of the 1 GiB
# file in a scattered order before repeating. Depth is 16 everywhere: QEMU 7.2's NBD client keeps
# at most 16 requests in flight (MAX_NBD_REQUESTS), so a deeper iSCSI queue would not compare.
# qemu-img bench counts requests instead of running for a time: each run is preceded by a probe
# of a few thousand requests (also the warm-up), whose rate sets the count for BENCH_RUNTIME.
#
# The initiator and the server share the same CPUs (2 on the machine this was written on), so
# absolute numbers are capped by the client: compare ratios and CPU per request, not raw IOPS
# across machines. Besides the throughput table the script prints each side's CPU time per
# request (server: /proc/PID/stat over the measured window; client: its user+sys time) and the
# server's system calls per request (perf stat, as in nbd.sh).
#
# Environment:
#   BENCH_SERVERS="lunad tgt tgt-aio lunad-direct nbd"   what to run, in this order
#   BENCH_JOBS="..."                 subset of the job names above (default: all)
#   BENCH_RUNTIME=5                  measured seconds per run (integer)
#   BENCH_ROUNDS=1                   repeat every run; the report keeps each median run
#   BENCH_SIZE=1G                    size of the served file
#   BENCH_DEPTH=16                   requests in flight
#   BENCH_SYSCALLS=1                 count server system calls with perf (0: don't)
#   BENCH_DIR                        where the temporary directory goes (default /var/tmp)
#   BENCH_RESULTS_DIR                if set, the raw outputs, TSV and server logs are kept there
#   LUNAD=path                       lunad binary; without it the tree is built (Release, target
#                                    lunad only) in BENCH_BUILD_DIR (default /tmp/bench-build)
#   BENCH_LUNAD_OPTIONS="cache=writeback,aio=io_uring"   appended to lunad's --export
#   BENCH_LUNAD_ARGS=""              extra lunad arguments (e.g. "--workers 1")

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=/usr/bin/python3

servers=${BENCH_SERVERS:-lunad tgt tgt-aio lunad-direct nbd}
selected_jobs=${BENCH_JOBS:-}
runtime=${BENCH_RUNTIME:-5}
rounds=${BENCH_ROUNDS:-1}
size=${BENCH_SIZE:-1G}
depth=${BENCH_DEPTH:-16}
count_syscalls=${BENCH_SYSCALLS:-1}
lunad_options=${BENCH_LUNAD_OPTIONS:-cache=writeback,aio=io_uring}
lunad_args=${BENCH_LUNAD_ARGS:-}
build_dir=${BENCH_BUILD_DIR:-/tmp/bench-build}

lunad_iqn=iqn.2026-12.org.luna.bench:d
tgt_iqn=iqn.2026-12.org.tgt.bench:d
export_name=d
stride=$((100003 * 4096)) # see "random" above
pattern=165               # 0xa5: written data is never all zeroes

# name|kind|block size. kind: perf (iscsi-perf), read or write (qemu-img bench)
all_jobs=(
    "perf-read-1m-qd$depth|perf|1M"
    "randread-4k-qd$depth|read|4k"
    "randwrite-4k-qd$depth|write|4k"
    "read-1m-qd$depth|read|1M"
    "write-1m-qd$depth|write|1M"
)

BENCH_NAME=iscsi.sh
source "$here/lib.sh"

for tool in iscsi-perf iscsi-readcapacity16 qemu-img tgtd tgtadm fio jq nbdinfo; do
    command -v "$tool" >/dev/null ||
        die "$tool is missing (Debian packages: libiscsi-bin qemu-utils qemu-block-extra tgt fio jq libnbd-bin)"
done
[[ -x $python ]] || die "$python is missing"
[[ $runtime =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNTIME must be a whole number of seconds"

# --- cleanup: every process we start is tracked here and stopped on any exit -----------------
work=
server_pid=
server_kind=
client_pid=
perf_pid=
tgt_control=

stop_server() {
    [[ -n $server_pid ]] || return 0
    if [[ $server_kind == tgt ]]; then
        # tgtd ignores SIGTERM while it has targets: SIGKILL, then remove the control socket it
        # created (it lives in /var/run/tgtd whatever the port; this port was free at start).
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        rm -f "/var/run/tgtd/socket.$tgt_control" "/var/run/tgtd/socket.$tgt_control.lock"
    else
        stop_pid "$server_pid" 10
    fi
    server_pid=
    server_kind=
}

stop_client() {
    [[ -n $client_pid ]] || return 0
    stop_pid "$client_pid" 5
    # timeout leads its own process group: SIGKILL whatever of it is left (a client that
    # outlived timeout, e.g. iscsi-perf still draining requests).
    kill -KILL -- "-$client_pid" 2>/dev/null || true
    client_pid=
}

cleanup() {
    stop_pid "$perf_pid" 5
    stop_client
    stop_server
    [[ -n $work && -d $work ]] && rm -rf "$work"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- helpers -----------------------------------------------------------------------------

find_lunad() {
    if [[ -n ${LUNAD:-} ]]; then
        [[ -x $LUNAD ]] || die "LUNAD=$LUNAD is not an executable"
        echo "$LUNAD"
        return
    fi
    say "== building lunad (Release) in $build_dir"
    if ! { cmake -S "$repo" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DLUNA_TESTS=OFF &&
        cmake --build "$build_dir" -j"$(nproc)" --target lunad; } >"$build_dir.log" 2>&1; then
        tail -n 30 "$build_dir.log" >&2
        die "building lunad failed (log: $build_dir.log)"
    fi
    echo "$build_dir/bin/lunad"
}

# tgt_admin ARGS...: tgtadm on our control port
tgt_admin() { tgtadm -C "$tgt_control" --lld iscsi "$@"; }

# start_server NAME PORT: starts it in the background, sets server_pid and the client addresses
# (iscsi_url, iscsi_opts, nbd_uri, nbd_opts); returns non-zero (log shown) if it never answers.
start_server() {
    local name=$1 port=$2 log="$work/$1.log" tries=0
    case $name in
    lunad | lunad-direct | nbd)
        local options=$lunad_options
        [[ $name == lunad-direct ]] && options="cache=none,aio=io_uring"
        # shellcheck disable=SC2086 # lunad_args is a list of words on purpose
        "$lunad" --iscsi "127.0.0.1:$port" --target "$lunad_iqn=$export_name" \
            --nbd "127.0.0.1:$((port + 1))" --export "$export_name=$image,$options" $lunad_args \
            >>"$log" 2>&1 &
        server_pid=$!
        server_kind=lunad
        iscsi_url="iscsi://127.0.0.1:$port/$lunad_iqn/0"
        iscsi_opts="driver=iscsi,transport=tcp,portal=127.0.0.1:$port,target=$lunad_iqn,lun=0,header-digest=none"
        nbd_uri="nbd://127.0.0.1:$((port + 1))/$export_name"
        nbd_opts="driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$((port + 1)),export=$export_name"
        until nbdinfo --size "$nbd_uri" >/dev/null 2>&1 && iscsi-readcapacity16 "$iscsi_url" >/dev/null 2>&1; do
            if ! kill -0 "$server_pid" 2>/dev/null || ((++tries > 200)); then
                say "iscsi.sh: lunad did not come up on ports $port/$((port + 1)); its log:"
                tail -n 20 "$log" >&2 || true
                stop_server
                return 1
            fi
            sleep 0.05
        done
        ;;
    tgt | tgt-aio)
        # A control port no running tgtd answers on, then our tgtd on it.
        for _ in $(seq 1 50); do
            tgt_control=$((RANDOM % 20000 + 10000))
            [[ -e /var/run/tgtd/socket.$tgt_control ]] && continue
            tgtadm -C "$tgt_control" --op show --mode system >/dev/null 2>&1 || break
        done
        tgtd -f -C "$tgt_control" --iscsi "portal=127.0.0.1:$port" >>"$log" 2>&1 &
        server_pid=$!
        server_kind=tgt
        until tgt_admin --op show --mode target >/dev/null 2>&1; do
            if ! kill -0 "$server_pid" 2>/dev/null || ((++tries > 200)); then
                say "iscsi.sh: tgtd did not come up; its log:"
                tail -n 20 "$log" >&2 || true
                stop_server
                return 1
            fi
            sleep 0.05
        done
        local bstype=()
        [[ $name == tgt-aio ]] && bstype=(--bstype aio)
        # tgt's LUN 0 is its controller: the disk is LUN 1.
        if ! { tgt_admin --op new --mode target --tid 1 -T "$tgt_iqn" &&
            tgt_admin --op new --mode logicalunit --tid 1 --lun 1 -b "$image" "${bstype[@]}" &&
            tgt_admin --op bind --mode target --tid 1 -I ALL; } >>"$log" 2>&1; then
            say "iscsi.sh: tgtadm could not set up $name; its log:"
            tail -n 20 "$log" >&2 || true
            stop_server
            return 1
        fi
        iscsi_url="iscsi://127.0.0.1:$port/$tgt_iqn/1"
        iscsi_opts="driver=iscsi,transport=tcp,portal=127.0.0.1:$port,target=$tgt_iqn,lun=1,header-digest=none"
        nbd_uri=
        nbd_opts=
        ;;
    *) die "unknown server $name" ;;
    esac
}

bytes_of() { numfmt --from=iec "${1^^}"; }

# measure OUT CMD...: runs the client in the background, with the server's CPU ticks, perf's
# syscall count and the client's own CPU time around it; sets m_ns, m_ticks, m_syscalls,
# m_client_s and m_status.
measure() {
    local out=$1
    shift
    local perf_out="$out.perf" ticks_before started
    ticks_before=$(cpu_ticks "$server_pid")
    started=$(now_ns)
    perf_pid=
    if [[ $count_syscalls == 1 ]]; then
        perf stat -x, -o "$perf_out" -e raw_syscalls:sys_enter -p "$server_pid" 2>/dev/null &
        perf_pid=$!
    fi
    # timeout outermost: it is client_pid, and a SIGTERM to it reaches its whole process group
    # (time and the client), so stopping it leaves no orphan behind.
    timeout --kill-after=10 $((runtime * 4 + 120)) /usr/bin/time -f '%U %S' -o "$out.time" "$@" \
        >"$out" 2>"$out.err" &
    client_pid=$!
    m_status=0
    wait "$client_pid" || m_status=$?
    client_pid=
    m_ticks=$(($(cpu_ticks "$server_pid") - ticks_before))
    m_ns=$(($(now_ns) - started))
    m_syscalls=-
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        perf_pid=
        m_syscalls=$(awk -F, '/raw_syscalls:sys_enter/ && $1 ~ /^[0-9]+$/ { print $1 }' "$perf_out" 2>/dev/null)
        [[ -n $m_syscalls ]] || m_syscalls=-
    fi
    # (GNU time writes "Command exited with non-zero status N" first when it did)
    m_client_s=$(tail -n 1 "$out.time" 2>/dev/null | awk 'NF == 2 { printf "%.3f", $1 + $2 }')
    [[ -n $m_client_s ]] || m_client_s=-
}

# qemu_seconds FILE: qemu-img bench's own measure ("Run completed in X seconds.")
qemu_seconds() { sed -n 's/^Run completed in \([0-9.]*\) seconds\.$/\1/p' "$1"; }

# record SERVER JOB REQUESTS SECONDS BYTES_PER_REQUEST: appends one line to results.tsv from
# the last measure: iops MB/s server_cpu_us/req client_cpu_us/req server_syscalls/req
record() {
    awk -v s="$1" -v j="$2" -v n="$3" -v secs="$4" -v bs="$5" -v ticks="$m_ticks" -v hz="$clock_ticks" \
        -v ns="$m_ns" -v sc="$m_syscalls" -v cl="$m_client_s" 'BEGIN {
            iops = n / secs
            window = ns / 1e9                     # server CPU is counted over the whole window
            cpu = (ticks * 1e6 / hz) / window / iops
            client = (cl != "-") ? cl * 1e6 / window / iops : "-"
            sys = (sc != "-") ? sc / window / iops : "-"
            printf "%s\t%s\t%.0f\t%.1f\t%.1f\t%s\t%s\n", s, j, iops, iops * bs / 1e6, cpu,
                (client == "-") ? "-" : sprintf("%.1f", client), (sys == "-") ? "-" : sprintf("%.2f", sys)
        }' >>"$work/results.tsv"
}

failed() { # SERVER JOB WHY OUTPUT-FILE
    say "iscsi.sh: $1 $2: $3"
    [[ -f $4 ]] && tail -n 10 "$4" "$4.err" >&2 2>/dev/null
    printf '%s\t%s\t-\t-\t-\t-\t-\n' "$1" "$2" >>"$work/results.tsv"
}

# run_qemu SERVER JOB KIND BS: probe (warm-up, sets the count), then the measured run.
run_qemu() {
    local server=$1 job=$2 kind=$3 bs=$4 opts step
    local bytes
    bytes=$(bytes_of "$bs")
    if [[ $server == nbd ]]; then opts=$nbd_opts; else opts=$iscsi_opts; fi
    step=$bytes
    [[ $bs == 4k ]] && step=$stride
    local args=(bench -t none -d "$depth" -s "$bytes" -S "$step" --image-opts)
    [[ $kind == write ]] && args=(bench -w --pattern="$pattern" -t none -d "$depth" -s "$bytes" -S "$step" --image-opts)
    local probe=$((bytes >= 1048576 ? 200 : 4000)) out="$work/$server.$job.$round"
    # Probe: also the warm-up (login, first touches), then as many requests as fill $runtime.
    # (in the background, so that a signal to this script is handled at once, see measure)
    timeout --kill-after=10 120 qemu-img "${args[@]}" -c "$probe" "$opts" >"$out.probe" 2>&1 &
    client_pid=$!
    local probe_status=0
    wait "$client_pid" || probe_status=$?
    client_pid=
    if ((probe_status != 0)); then
        failed "$server" "$job" "qemu-img bench probe failed" "$out.probe"
        return 0
    fi
    local probe_s count
    probe_s=$(qemu_seconds "$out.probe")
    count=$(awk -v n="$probe" -v s="${probe_s:-0}" -v t="$runtime" \
        'BEGIN { c = (s > 0) ? n / s * t : n; if (c < n) c = n; printf "%d", c }')
    measure "$out" qemu-img "${args[@]}" -c "$count" "$opts"
    local secs
    secs=$(qemu_seconds "$out")
    if ((m_status != 0)) || [[ -z $secs ]]; then
        failed "$server" "$job" "qemu-img bench failed (status $m_status)" "$out"
        return 0
    fi
    record "$server" "$job" "$count" "$secs" "$bytes"
}

# run_perf SERVER JOB BS: iscsi-perf (iSCSI) or, for the NBD figure, fio's nbd engine (libnbd),
# both time-based sequential reads with $depth requests in flight.
run_perf() {
    local server=$1 job=$2 bs=$3 bytes out="$work/$1.$2.$round"
    bytes=$(bytes_of "$bs")
    if [[ $server == nbd ]]; then
        measure "$out" fio --name="$job" --ioengine=nbd --uri="$nbd_uri" --rw=read --bs="$bs" \
            --iodepth="$depth" --time_based --runtime="$runtime" --output-format=json --output="$out.json"
        if ((m_status != 0)) || [[ ! -s $out.json ]]; then
            failed "$server" "$job" "fio failed (status $m_status)" "$out"
            return 0
        fi
        local ios secs
        read -r ios secs < <(jq -r '.jobs[0] | [.read.total_ios, (.read.runtime / 1000)] | @tsv' "$out.json")
        record "$server" "$job" "$ios" "$secs" "$bytes"
        return 0
    fi
    local block_length blocks
    block_length=$(iscsi-readcapacity16 "$iscsi_url" | sed -n 's/^LOGICAL BLOCK LENGTH IN BYTES:\([0-9]*\)$/\1/p')
    [[ -n $block_length ]] || { failed "$server" "$job" "READ CAPACITY 16 failed" /dev/null; return 0; }
    blocks=$((bytes / block_length))
    measure "$out" iscsi-perf -i "iqn.2026-12.org.luna.bench:perf" -m "$depth" -b "$blocks" -t "$runtime" "$iscsi_url"
    # iscsi-perf exits 0 even when the connection drops (it prints "iscsi_service failed" and
    # stops): an error message anywhere, or no final average, is a failure.
    tr '\r' '\n' <"$out" >"$out.lines"
    local iops
    iops=$(sed -n 's/^iops average \([0-9]*\) .*/\1/p' "$out.lines" | tail -n 1)
    if ((m_status != 0)) || [[ -s $out.err ]] || grep -qi "fail" "$out.lines" || [[ -z $iops ]] ||
        ! grep -q '^finished\.$' "$out.lines"; then
        failed "$server" "$job" "iscsi-perf failed (status $m_status)" "$out.lines"
        return 0
    fi
    # iscsi-perf's average is over its whole run (it started the clock just before the first
    # request): IOPS × runtime requests in $runtime seconds.
    record "$server" "$job" "$((iops * runtime))" "$runtime" "$bytes"
}

# --- main --------------------------------------------------------------------------------
clock_ticks=$(getconf CLK_TCK)
if [[ $count_syscalls == 1 ]] && ! perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
    say "iscsi.sh: perf cannot count raw_syscalls:sys_enter here; syscalls/req will be '-'"
    count_syscalls=0
fi

run_servers=()
lunad=
for server in $servers; do
    case $server in
    lunad | lunad-direct | nbd)
        [[ -n $lunad ]] || lunad=$(find_lunad)
        run_servers+=("$server")
        ;;
    tgt | tgt-aio) run_servers+=("$server") ;;
    *) die "unknown server '$server' (lunad, tgt, tgt-aio, lunad-direct, nbd)" ;;
    esac
done
((${#run_servers[@]} > 0)) || die "no server to run"

jobs_to_run=()
for entry in "${all_jobs[@]}"; do
    name=${entry%%|*}
    if [[ -z $selected_jobs || " $selected_jobs " == *" $name "* ]]; then
        jobs_to_run+=("$entry")
    fi
done
((${#jobs_to_run[@]} > 0)) || die "BENCH_JOBS selects no job (jobs: ${all_jobs[*]%%|*})"

started_at=$(date '+%Y-%m-%d %H:%M')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/luna-iscsi-bench.XXXXXX")
image="$work/image.raw"
: >"$work/results.tsv"
say "== writing $size of random data to $image"
head -c "$size" /dev/urandom >"$image"

# Job-major order with a fresh server per run, as in nbd.sh: outside load (the machine is
# shared) spreads over all servers instead of landing on whichever ran during a busy minute.
for ((round = 1; round <= rounds; round++)); do
    for entry in "${jobs_to_run[@]}"; do
        IFS='|' read -r job kind bs <<<"$entry"
        for server in "${run_servers[@]}"; do
            port=$(free_port)
            # lunad listens on port and port + 1 (NBD): retry if the second one is taken.
            while [[ $server != tgt* ]] && ! "$python" -c "import socket,sys; socket.socket().bind(('127.0.0.1', int(sys.argv[1])))" $((port + 1)) 2>/dev/null; do
                port=$(free_port)
            done
            if ! start_server "$server" "$port"; then
                printf '%s\t%s\t-\t-\t-\t-\t-\n' "$server" "$job" >>"$work/results.tsv"
                continue
            fi
            say "== round $round/$rounds, $server: $job (${runtime}s)"
            case $kind in
            perf) run_perf "$server" "$job" "$bs" ;;
            *) run_qemu "$server" "$job" "$kind" "$bs" ;;
            esac
            if ! kill -0 "$server_pid" 2>/dev/null; then
                say "iscsi.sh: $server died during $job; its log:"
                tail -n 20 "$work/$server.log" >&2 || true
            fi
            stop_server
        done
    done
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "iSCSI benchmark, $started_at: ${runtime}s per run, $rounds round(s), $size file, depth $depth"
echo "$(nproc) CPUs shared by the initiator and the server: absolute numbers are capped by the client; compare ratios"
echo "load average before: $load_before, after: $load_after (above ~2 means other work shared the CPUs)"
[[ -n $lunad ]] && echo "lunad: $lunad ($lunad_options${lunad_args:+ $lunad_args}; lunad-direct: cache=none,aio=io_uring)"
echo "tgt: $(tgtd --version 2>/dev/null | head -n 1) (tgt: rdwr backing store, page cache; tgt-aio: --bstype aio, O_DIRECT)"
echo "clients: iscsi-perf (perf-read row; NBD: fio $(fio --version 2>/dev/null) nbd engine), $(qemu-img --version | head -n 1) bench (other rows)"
echo
"$python" "$here/iscsi_report.py" "$work/results.tsv"

if [[ -n ${BENCH_RESULTS_DIR:-} ]]; then
    mkdir -p "$BENCH_RESULTS_DIR"
    find "$work" -maxdepth 1 -type f ! -name image.raw -exec cp {} "$BENCH_RESULTS_DIR"/ \;
    say "== raw results kept in $BENCH_RESULTS_DIR"
fi
