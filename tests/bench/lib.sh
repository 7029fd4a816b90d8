# Shared by the benchmark scripts (bash).  Source it after setting BENCH_NAME (for messages):
#   say TEXT / die TEXT          to stderr; die exits 1
#   stop_pid PID [SECONDS]       SIGTERM, then SIGKILL if it is still there after SECONDS (10)
#   free_port                    a TCP port nobody listens on
#   cpu_ticks PID                utime + stime of the whole process (all threads), in clock ticks
#   rss_kib PID                  resident memory
#   now_ns                       the time in nanoseconds
#   built_binary NAME VARIABLE   $VARIABLE if set (checked executable), else this tree's
#                                build/, build-bench/ or build-lead/ bin/NAME; fails if none

say() { printf '%s\n' "$*" >&2; }
die() { say "$BENCH_NAME: $*"; exit 1; }

stop_pid() {
    local pid=$1 limit=${2:-10} waited=0
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((waited < limit * 10)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$BENCH_NAME: pid $pid ignored SIGTERM for ${limit}s, killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

free_port() {
    "${python:-python3}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cpu_ticks() {
    local stat rest
    stat=$(<"/proc/$1/stat") || { echo 0; return; }
    rest=${stat##*) } # the command name may contain spaces and parentheses
    read -r -a fields <<<"$rest"
    echo $((fields[11] + fields[12])) # fields 14 and 15 of stat(5), counted from the state field
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

now_ns() { date +%s%N; }

built_binary() {
    local name=$1 variable=$2 candidate
    if [[ -n ${!variable:-} ]]; then
        [[ -x ${!variable} ]] || die "$variable=${!variable} is not an executable"
        echo "${!variable}"
        return
    fi
    for candidate in "$repo/build/bin/$name" "$repo/build-bench/bin/$name" "$repo/build-lead/bin/$name"; do
        [[ -x $candidate ]] && { echo "$candidate"; return; }
    done
    return 1
}
