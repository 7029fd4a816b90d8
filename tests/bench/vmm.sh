#!/usr/bin/env bash
# lunavm benchmark (a benchmark, not a test: ctest does not run it; it asserts nothing about speed).
#
# Boots the same guest with lunavm and with QEMU (-accel kvm -M microvm), one VMM after the other,
# BENCH_ROUNDS times each (interleaved), and prints one Markdown table: metric | lunavm | QEMU |
# lunavm/QEMU, each figure the median over the rounds.  Both VMMs get the same Debian bzImage
# (tests/vmm/nested_kvm.sh prepare), the same inner initramfs (nested_kvm.sh inner-initrd), the same
# -m/-smp, the same kernel command line and one virtio-blk disk on the same raw file.
#
# Where this machine has no /dev/kvm, both VMMs run inside the QEMU TCG guest of
# tests/vmm/nested_kvm.sh run (nested SVM), one after the other in the same outer guest; where it
# has one, they run here directly.  The clock is the one of the machine the VMMs run on.
#
# Metrics (a small static helper, vmmstamp, built from the C below, starts the VMM and time-stamps
# every line of its console output with CLOCK_MONOTONIC since just before its fork):
#   start -> /init      the guest's first user-space instruction: the kernel runs rdinit=/luna/first,
#                       which mounts devtmpfs, prints @@BENCH-INIT@@ and execs the harness's /init
#   start -> disk read  /init has loaded the virtio modules (nested/preamble.sh), read 4 KiB from
#                       /dev/vda and printed @@BENCH-READY@@
#   memory beyond RAM   at @@BENCH-READY@@ vmmstamp copies /proc/PID/smaps and /proc/PID/status;
#                       the guest RAM mapping is the anonymous mapping of RAM..RAM+4 MiB size with
#                       the largest Rss.  Overhead = total Pss - that mapping's Pss (and, for
#                       reference, VmRSS - that mapping's Rss).  smaps counts user-space pages
#                       only: KVM's kernel-side memory (page tables, vCPU state) is left out for
#                       both VMMs.
#   start -> exit       the guest powers off 1 s after READY (ACPI poweroff -f); when the VMM exits
# Firecracker's published budgets (<= 125 ms to /init, <= 5 MiB overhead) are printed beside the
# table; under nested TCG every time is inflated by one to two orders of magnitude, so the
# lunavm/QEMU ratio measured the same way is the number to read, not the absolute times.
#
# Environment:
#   BENCH_ROUNDS=3        boots per VMM (the table shows medians)
#   BENCH_MEM=256         guest RAM (MiB) for both VMMs
#   BENCH_SMP=1           guest vCPUs for both VMMs
#   BENCH_OUTER_MEM=1024  RAM of the outer TCG guest (nested set-up only)
#   BENCH_DIR             where the temporary directory goes (default /var/tmp)
#   BENCH_RESULTS_DIR     if set, the raw console logs and smaps are kept there
#   LUNAVM=path           lunavm binary (default: build*/bin/lunavm of this tree)
#   LUNA_VMM_QEMU         qemu-system-x86_64 (as for nested_kvm.sh)

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
harness=$repo/tests/vmm/nested_kvm.sh

rounds=${BENCH_ROUNDS:-3}
mem=${BENCH_MEM:-256}
smp=${BENCH_SMP:-1}
machine=microvm # the inner initramfs has virtio_mmio but not virtio_pci: -M pc would see no disk
outer_mem=${BENCH_OUTER_MEM:-1024}
qemu=${LUNA_VMM_QEMU:-qemu-system-x86_64}

BENCH_NAME=vmm.sh
source "$here/lib.sh"

for tool in gcc "$qemu" busybox cpio; do
    command -v "$tool" >/dev/null || die "$tool is missing (deploy/install-deps.sh installs it)"
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS=$rounds: a positive count expected"

lunavm=$(built_binary lunavm LUNAVM) || die "no lunavm binary (set LUNAVM= or build it: make lunavm)"

work=
cleanup() { [[ -n $work && -d $work ]] && rm -rf "$work"; return 0; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/luna-bench-vmm.XXXXXX")

direct=0
[[ -c /dev/kvm && -w /dev/kvm ]] && direct=1

# --- vmmstamp: start a VMM, time-stamp its output, snapshot its memory at the READY marker -------
cat >"$work/vmmstamp.c" <<'EOF'
/* vmmstamp LOG SMAPS STATUS TIMEOUT_S -- CMD...: runs CMD with stdout+stderr on a pipe, writes each
 * output line to LOG as "MS<TAB>line" (milliseconds since just before fork, CLOCK_MONOTONIC).  At
 * the first line holding @@BENCH-READY@@ it copies /proc/PID/smaps and /proc/PID/status to SMAPS
 * and STATUS.  When the output ends it waits for CMD (SIGKILL after TIMEOUT_S in all) and writes
 * "MS<TAB>@@VMM-EXIT=STATUS@@". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct timespec t0;
static pid_t child;
static double ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0.tv_sec) * 1e3 + (t.tv_nsec - t0.tv_nsec) / 1e6;
}
static void copy(const char *from, const char *to)
{
    char buffer[65536];
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ssize_t n;
    while (in >= 0 && out >= 0 && (n = read(in, buffer, sizeof buffer)) > 0)
        if (write(out, buffer, (size_t)n) != n)
            break;
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
}
static void on_alarm(int signal)
{
    (void)signal;
    kill(child, SIGKILL);
}
int main(int argc, char **argv)
{
    if (argc < 7 || strcmp(argv[5], "--")) {
        fprintf(stderr, "usage: vmmstamp LOG SMAPS STATUS TIMEOUT_S -- CMD...\n");
        return 2;
    }
    FILE *log = fopen(argv[1], "w");
    int fds[2];
    if (!log || pipe(fds))
        return 1;
    signal(SIGALRM, on_alarm);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    child = fork();
    if (child == 0) {
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[6], argv + 6);
        _exit(127);
    }
    close(fds[1]);
    alarm((unsigned)atoi(argv[4]));
    FILE *in = fdopen(fds[0], "r");
    char *line = NULL, path[64];
    size_t size = 0;
    int ready = 0;
    while (getline(&line, &size, in) > 0) {
        double when = ms();
        if (!ready && strstr(line, "@@BENCH-READY@@")) {
            ready = 1;
            snprintf(path, sizeof path, "/proc/%d/smaps", (int)child);
            copy(path, argv[2]);
            snprintf(path, sizeof path, "/proc/%d/status", (int)child);
            copy(path, argv[3]);
        }
        line[strcspn(line, "\r\n")] = 0;
        fprintf(log, "%.3f\t%s\n", when, line);
        fflush(log);
    }
    int status = 0;
    waitpid(child, &status, 0);
    fprintf(log, "%.3f\t@@VMM-EXIT=%d@@\n", ms(), WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    fclose(log);
    return 0;
}
EOF
gcc -static -O2 -Wall -o "$work/vmmstamp" "$work/vmmstamp.c" || die "building vmmstamp failed"

# --- the kernel, the inner initramfs, the disk ------------------------------------------------------
kernel=$("$harness" prepare | sed -n 's/^kernel=//p')
[[ -f $kernel ]] || die "nested_kvm.sh prepare gave no kernel"
cat >"$work/first" <<'EOF'
#!/bin/sh
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "@@BENCH-INIT@@" >/dev/console
exec /init
EOF
chmod 755 "$work/first"
cat >"$work/inner.sh" <<'EOF'
dd if=/dev/vda of=/dev/null bs=4096 count=1 2>/dev/null || echo "bench: reading /dev/vda failed"
echo "@@BENCH-READY@@ disks: $(ls /sys/block | tr '\n' ' ')"
sleep 1
EOF
"$harness" inner-initrd "$work/inner.img" "$work/inner.sh" --file "$work/first:/luna/first" ||
    die "nested_kvm.sh inner-initrd failed"
head -c 16M /dev/urandom >"$work/disk.raw"

# QEMU's firmware: only the files microvm needs with -kernel (the outer initramfs stays small).
mkdir -p "$work/qemu-data"
for f in bios-microvm.bin linuxboot_dma.bin; do
    for d in /usr/share/qemu /usr/share/seabios; do
        [[ -e $d/$f ]] && { cp -L "$d/$f" "$work/qemu-data/$f"; break; }
    done
done

# --- the script that runs the VMMs (in the outer guest, or here) -------------------------------------
append="console=ttyS0 quiet panic=-1 rdinit=/luna/first"
qemu_machine="-M microvm -device virtio-blk-device,drive=d0"
cat >"$work/outer.sh" <<EOF
B=\${BENCH_BOOT:-/bench}
T=\${BENCH_TMP:-/tmp}
one() { # VMM ROUND
    case \$1 in
    lunavm) set -- \$1 \$2 lunavm -m ${mem}M -smp $smp -kernel \$B/vmlinuz -initrd \$B/inner.img \\
                -append "$append" -nographic -no-reboot -drive file=\$B/disk.raw,if=virtio,format=raw ;;
    qemu) set -- \$1 \$2 $(basename "$qemu") -accel kvm -cpu host $qemu_machine -m ${mem}M -smp $smp \\
                -nodefaults -no-user-config -display none -serial stdio -no-reboot -L \$B/qemu-data \\
                -kernel \$B/vmlinuz -initrd \$B/inner.img -append "$append" \\
                -drive id=d0,file=\$B/disk.raw,if=none,format=raw ;;
    esac
    v=\$1 r=\$2
    shift 2
    \$B/vmmstamp \$T/\$v.\$r.log \$T/\$v.\$r.smaps \$T/\$v.\$r.status 200 -- "\$@"
    # One summary line: times (ms) of the markers, then memory (KiB) from smaps at READY.
    init=\$(awk -F'\t' '/@@BENCH-INIT@@/ { print \$1; exit }' \$T/\$v.\$r.log)
    ready=\$(awk -F'\t' '/@@BENCH-READY@@/ { print \$1; exit }' \$T/\$v.\$r.log)
    exit_line=\$(awk -F'\t' '/@@VMM-EXIT=/ { print \$1, \$2 }' \$T/\$v.\$r.log)
    mem=\$(awk -v ram=$((mem * 1024)) '
        /^[0-9a-f]+-[0-9a-f]+ / { split(\$1, a, "-"); inode = \$5; path = \$6; cur = NR; next }
        /^Size:/ { size[cur] = \$2; anon[cur] = (inode == 0) }
        /^Rss:/ { rss[cur] = \$2; total_rss += \$2 }
        /^Pss:/ { pss[cur] = \$2; total_pss += \$2; if (inode != 0) file_pss += \$2 }
        END {
            best = ""
            for (m in size) if (anon[m] && size[m] >= ram && size[m] <= ram + 4096 && (best == "" || rss[m] > rss[best])) best = m
            if (best == "") { print "- - - - - -"; exit }
            print total_rss, total_pss, size[best], rss[best], pss[best], file_pss + 0
        }' \$T/\$v.\$r.smaps 2>/dev/null)
    vmrss=\$(awk '/^VmRSS:/ { print \$2 }' \$T/\$v.\$r.status 2>/dev/null)
    echo "BENCH-RESULT \$v \$r \${init:--} \${ready:--} \${exit_line:--} \${vmrss:--} \${mem:-- - - - - -}"
    if [ "\$r" = 1 ]; then # where the memory beyond RAM is: the biggest mappings but the RAM's
        awk -v ram=$((mem * 1024)) '
            /^[0-9a-f]+-[0-9a-f]+ / { name = (\$6 == "" ? "[anon]" : \$6); next }
            /^Size:/ { size = \$2 }
            /^Rss:/ { if (size < ram || size > ram + 4096) rss[name] += \$2 }
            END { for (n in rss) print rss[n], n }' \$T/\$v.\$r.smaps 2>/dev/null | sort -rn | head -n 6 |
            while read -r kib name; do echo "BENCH-TOP \$v \$kib KiB \$name"; done
    fi
    grep -q "@@BENCH-READY@@" \$T/\$v.\$r.log || { echo "BENCH-FAILED \$v \$r; its console:"; tail -n 30 \$T/\$v.\$r.log; }
}
r=1
while [ \$r -le $rounds ]; do
    one lunavm \$r
    one qemu \$r
    r=\$((r + 1))
done
if [ -n "\${BENCH_SHOW_SMAPS:-}" ]; then for f in \$T/*.1.smaps; do echo "== \$f"; cat \$f; done; fi
cat /proc/loadavg | sed 's/^/BENCH-LOADAVG-INNER /'
EOF

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
say "== $rounds round(s) of lunavm and QEMU ($machine), ${mem} MiB, $smp vCPU(s), $( ((direct)) && echo "directly on /dev/kvm" || echo "inside nested_kvm.sh's TCG guest")"
if ((direct)); then
    mkdir -p "$work/bench"
    cp "$kernel" "$work/bench/vmlinuz"
    cp "$work/inner.img" "$work/disk.raw" "$work/vmmstamp" "$work/bench/"
    cp -r "$work/qemu-data" "$work/bench/qemu-data"
    mkdir -p "$work/bin" "$work/run"
    ln -s "$lunavm" "$work/bin/lunavm"
    ln -s "$(command -v "$qemu")" "$work/bin/$(basename "$qemu")"
    (cd "$work" && PATH=$work/bin:$PATH BENCH_BOOT=$work/bench BENCH_TMP=$work/run sh "$work/outer.sh") >"$work/console.log" 2>&1 ||
        { tail -n 40 "$work/console.log" >&2; die "the VMM runs failed"; }
    where="directly on this machine's /dev/kvm"
else
    "$harness" run --timeout 600 --mem "$outer_mem" --smp 2 --binary "$lunavm" --binary "$(command -v "$qemu")" \
        --file "$kernel:/bench/vmlinuz" --file "$work/inner.img:/bench/inner.img" \
        --file "$work/disk.raw:/bench/disk.raw" --file "$work/vmmstamp:/bench/vmmstamp" \
        --file "$work/qemu-data:/bench/qemu-data" -- "$work/outer.sh" >"$work/console.log" 2>&1 ||
        { tail -n 60 "$work/console.log" >&2; die "the nested-KVM guest failed"; }
    where="inside a QEMU TCG guest (-cpu max, ${outer_mem} MiB, 2 vCPUs) with nested SVM (tests/vmm/nested_kvm.sh)"
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
grep -A 30 "^BENCH-FAILED" "$work/console.log" >&2 || true
grep "^BENCH-RESULT" "$work/console.log" >"$work/results.txt" || die "no results in the console log"

echo
echo "lunavm benchmark: $rounds boot(s) per VMM (medians), ${mem} MiB guest RAM, $smp vCPU(s), one virtio-blk disk (16 MiB raw file)"
echo "kernel: $(basename "$kernel") (bzImage); VMMs run $where"
echo "host: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)); load average before: $load_before, after: $load_after"
sed -n 's/^BENCH-LOADAVG-INNER /load average inside the outer guest at the end: /p' "$work/console.log" | cut -d' ' -f1-10
echo "lunavm: $lunavm"
echo "QEMU: $("$qemu" --version | head -n 1), -accel kvm -cpu host -M $machine -nodefaults"
echo
# BENCH-RESULT VMM ROUND INIT_MS READY_MS EXIT_MS @@VMM-EXIT=N@@ VMRSS TOTAL_RSS TOTAL_PSS RAM_SIZE RAM_RSS RAM_PSS FILE_PSS
awk -v rounds="$rounds" '
    function median(list,    n, v, i, j, t) {
        n = split(list, v, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
        if (n == 0) return "-"
        return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function add(vmm, key, value) { if (value != "-" && value != "") values[vmm, key] = values[vmm, key] " " value }
    {
        vmm = $2
        add(vmm, "init", $4); add(vmm, "ready", $5); add(vmm, "exit", $6)
        if ($9 != "-") {
            add(vmm, "pss_over", ($10 - $13) / 1024); add(vmm, "rss_over", ($8 - $12) / 1024)
            add(vmm, "ram", $12 / 1024); add(vmm, "file", $14 / 1024); add(vmm, "anon", ($10 - $13 - $14) / 1024)
        }
        if ($7 !~ /=0@@/) bad[vmm] = bad[vmm] " round " $3 ": " $7
    }
    function row(name, key, unit, fmt,    l, q) {
        l = median(values["lunavm", key]); q = median(values["qemu", key])
        printf "| %s | %s | %s | %s |\n", name, (l == "-" ? "-" : sprintf(fmt, l)), (q == "-" ? "-" : sprintf(fmt, q)),
            (l == "-" || q == "-" || q == 0) ? "-" : sprintf("%.2f", l / q)
    }
    END {
        print "| metric | lunavm | QEMU | lunavm/QEMU |"
        print "|---|---:|---:|---:|"
        row("start -> /init (ms)", "init", "ms", "%.0f")
        row("start -> disk read in /init (ms)", "ready", "ms", "%.0f")
        row("start -> VMM exit after poweroff (ms)", "exit", "ms", "%.0f")
        row("memory beyond guest RAM, Pss (MiB)", "pss_over", "MiB", "%.1f")
        row("  of which files: binary + shared libraries (MiB)", "file", "MiB", "%.1f")
        row("  of which anonymous: heap, stacks, buffers (MiB)", "anon", "MiB", "%.1f")
        row("memory beyond guest RAM, VmRSS (MiB)", "rss_over", "MiB", "%.1f")
        row("guest RAM touched (MiB, for reference)", "ram", "MiB", "%.1f")
        for (v in bad) printf "note: %s exit status:%s\n", v, bad[v]
    }' "$work/results.txt"
echo
echo "Firecracker's published budgets: <= 125 ms from start to /init, <= 5 MiB memory beyond guest RAM."
if ((!direct)); then
    echo "Times here are under nested TCG (every KVM exit and guest instruction of the outer guest emulated):"
    echo "compare the lunavm/QEMU ratio, not the milliseconds, with the budget. Memory is not inflated."
fi
echo
echo "largest Rss outside the guest RAM mapping, round 1 (KiB, by file; [anon] = all anonymous mappings):"
sed -n 's/^BENCH-TOP /  /p' "$work/console.log"
echo
echo "per round (ms to /init, ms to disk read, VMM exit status, Pss beyond RAM in KiB):"
awk '{ printf "  %-6s round %s: %s, %s, %s, %s\n", $2, $3, $4, $5, $7, ($9 == "-" ? "-" : $10 - $13) }' "$work/results.txt"

if [[ -n ${BENCH_RESULTS_DIR:-} ]]; then
    mkdir -p "$BENCH_RESULTS_DIR"
    cp "$work/console.log" "$work/results.txt" "$work/outer.sh" "$BENCH_RESULTS_DIR"/
    say "== raw results kept in $BENCH_RESULTS_DIR"
fi
