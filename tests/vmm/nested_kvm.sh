#!/usr/bin/env bash
# nested_kvm.sh: run KVM on a machine without /dev/kvm, for lunavm's tests.
#
# QEMU's software emulator (TCG) with `-cpu max` offers the guest AMD SVM with nested
# paging, and Debian's own kernel loads kvm_amd on it: the outer guest gets a working
# /dev/kvm, in which the VMM under test runs its (inner) guests.  Slow (a KVM exit to
# user space costs tens of microseconds) but real KVM.
#
#   tests/vmm/nested_kvm.sh prepare
#       Idempotent.  Downloads (apt-get download) the Debian kernel package that
#       linux-image-amd64 depends on into ${LUNA_VMM_CACHE:-$HOME/.cache/luna-vmm},
#       unpacks it there (dpkg-deb -x) and runs depmod on it.  Prints two lines:
#         kernel=PATH     the vmlinuz bzImage
#         modules=DIR     its /lib/modules/VERSION directory (with modules.dep)
#       It also unpacks the bzImage's ELF kernel beside it as vmlinux-VERSION (it has
#       a PVH entry point: run boots it, skipping the slow decompressor under TCG),
#       and then prints a third line:
#         vmlinux=PATH    that ELF kernel
#
#   tests/vmm/nested_kvm.sh run [--binary HOST_PATH]... [--file HOST_PATH:GUEST_PATH]...
#                               [--mem MiB] [--smp N] [--timeout SECONDS] -- GUEST_SCRIPT
#       Boots that kernel under qemu-system-x86_64 -accel tcg -cpu max (--mem default
#       2048, --smp default 2) with an initramfs holding busybox, the KVM modules and
#       the NIC's driver, each --binary in /usr/bin with every library ldd reports
#       (and the ELF interpreter), each --file at GUEST_PATH (a directory is copied
#       whole), kvm_smoke (tests/vmm/nested/kvm_smoke.c) in /usr/bin, and GUEST_SCRIPT.
#       The guest's /init mounts proc, sysfs, devtmpfs, tmpfs on /tmp, loads irqbypass,
#       kvm, ccp and kvm_amd (nested=1), sets up eth0 as 10.0.2.15/24 with its default
#       route via 10.0.2.2 (QEMU's user network: 10.0.2.2 is the host's 127.0.0.1, so
#       a server bound to 127.0.0.1 on the host is reachable from the guest; the guest
#       also gets LUNA_HOST=10.0.2.2 in its environment), then runs GUEST_SCRIPT with
#       /bin/sh (busybox ash) as root in /, prints the marker line
#       "@@LUNA-NESTED-KVM-EXIT=STATUS@@" and powers off.
#       The serial console is streamed to stdout (CRs and terminal escapes removed).
#       Exit status: the guest script's; 124 with "nested_kvm: TIMEOUT ..." on stderr
#       when --timeout (default 300 s, counted from QEMU's start) ran out; 126 with
#       "nested_kvm: LOCKUP ..." when the outer kernel reported a CPU soft-locked for 45 s
#       or more, or a task blocked for 30 s, or the guest script printed a line with
#       "@@LUNA-NESTED-STUCK@@ WHY" (QEMU is stopped then: under TCG's nested SVM an outer
#       CPU now and then never leaves a nested guest, which no guest script can survive,
#       and a process in KVM_RUN on it cannot even be killed); 125 with
#       "nested_kvm: NO EXIT MARKER ..." when QEMU ended without the marker (guest
#       kernel panic, QEMU error, ...); 2 for a usage error.  Runs `prepare` itself
#       (quietly).  The files it builds live in a temporary directory removed at exit.
#
#   tests/vmm/nested_kvm.sh inner-initrd OUTPUT INIT_SCRIPT [--binary PATH]... [--file HOST:GUEST]...
#       Writes OUTPUT, a gzip-compressed cpio initramfs for an INNER guest (the same
#       kernel, booted by the VMM under test inside the outer guest): busybox, the
#       modules virtio_mmio, virtio_blk, virtio_net, virtio_rng and their dependencies,
#       --binary/--file as for run, and /init = tests/vmm/nested/preamble.sh (mounts
#       proc, sysfs, devtmpfs, tmpfs; stdio on /dev/console; insmods the modules, with
#       any MODULE.OPTION=VALUE of the kernel command line) followed by INIT_SCRIPT's
#       text, followed by an epilogue that prints "@@LUNA-INNER-EXIT=STATUS@@" and runs
#       poweroff -f if the script falls off its end.  Prints nothing but errors.
#       NB: Debian's kernel is built without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so
#       virtio_mmio.device=SIZE@ADDR:IRQ is ignored; describe virtio-mmio devices in
#       ACPI (LNRO0005 devices in the DSDT, as QEMU's microvm does).
#
# Environment: LUNA_VMM_CACHE (the cache directory), LUNA_VMM_QEMU (default
# qemu-system-x86_64), LUNA_VMM_APPEND (extra kernel command-line words for run),
# LUNA_VMM_NIC (virtio-net-pci, the default, or e1000), LUNA_VMM_KVM_AMD (kvm_amd's module
# options in the outer guest, default "nested=1"), LUNA_VMM_BOOT=bzimage (boot
# vmlinuz rather than the PVH vmlinux).  docs/lunavm-testing.md has more;
# tests/vmm/nested/selftest.sh checks all of this.
# Needs: qemu-system-x86, busybox-static, cpio, kmod (depmod), gcc, apt-get and
# dpkg-deb (deploy/install-deps.sh installs them).
set -euo pipefail
shopt -s inherit_errexit # a failure inside $(...) fails the script too

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nested_dir=$here/nested
cache=${LUNA_VMM_CACHE:-${HOME:-/root}/.cache/luna-vmm}
marker=@@LUNA-NESTED-KVM-EXIT=

die() { echo "nested_kvm: $*" >&2; exit 1; }
usage() {
  sed -n '/^#   tests\/vmm\/nested_kvm.sh/,/^# Environment/p' "${BASH_SOURCE[0]}" | sed '$d; s/^#//' >&2
  exit 2
}
log() { [ "${quiet:-0}" = 1 ] || echo "nested_kvm: $*" >&2; }

# --- prepare: the Debian kernel ---------------------------------------------------

kernel_package() { # the linux-image-VERSION-amd64 package linux-image-amd64 points to
  local package
  package=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
  if [ -z "$package" ] && [ "$(id -u)" -eq 0 ]; then
    log "apt-cache knows no linux-image-amd64, running apt-get update"
    apt-get update -qq >&2
    package=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
  fi
  [ -n "$package" ] || die "apt-cache depends linux-image-amd64 names no kernel package (apt-get update?)"
  echo "$package"
}

# extract_vmlinux BZIMAGE OUTPUT: the uncompressed ELF kernel inside a bzImage (as the
# kernel's scripts/extract-vmlinux does: find the compressed payload by its magic).
extract_vmlinux() {
  local image=$1 out=$2 magic tool offset
  for magic in $'\xfd7zXZ\x00':xz $'\x28\xb5\x2f\xfd':zstd $'\x1f\x8b\x08':gzip; do
    tool=${magic##*:}
    command -v "$tool" >/dev/null || continue
    while read -r offset; do
      tail -c +$((offset + 1)) "$image" | "$tool" -dc >"$out.tmp" 2>/dev/null || true
      if [ "$(head -c 4 "$out.tmp")" = $'\x7fELF' ]; then
        mv "$out.tmp" "$out"
        return 0
      fi
    done < <(LC_ALL=C grep -aobF "${magic%:*}" "$image" | cut -d: -f1 | head -n 3)
  done
  rm -f "$out.tmp"
  return 1
}

# Sets kernel_version, kernel_image (the bzImage), modules_dir, vmlinux_image (the ELF kernel,
# or empty) and boot_image: the ELF
# vmlinux when it has a PVH entry point (QEMU then boots it directly, without the
# bzImage's decompressor: that saves ~4 s under TCG), else the bzImage.
prepare() {
  local package version dir work deb current=$cache/current lists=/var/lib/apt/lists
  # What linux-image-amd64 points to changes only with the package lists: asking apt
  # costs ~1.5 s, so the answer is kept until they change.
  if [ -f "$current" ] && [ "$current" -nt "$lists" ] && [ "$current" -nt /etc/apt ]; then
    read -r package version <"$current"
  else
    package=$(kernel_package)
    version=$(apt-cache policy "$package" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }')
    [ -n "$version" ] && [ "$version" != "(none)" ] || die "apt-cache policy $package: no candidate version"
  fi
  kernel_version=${package#linux-image-}
  dir=$cache/${package}_${version//:/%}
  kernel_image=$dir/boot/vmlinuz-$kernel_version
  modules_dir=$dir/lib/modules/$kernel_version
  mkdir -p "$cache"
  # One download at a time when several harnesses start on an empty cache.
  local lock_fd
  exec {lock_fd}>"$cache/.lock"
  flock "$lock_fd"
  if [ ! -e "$dir/.prepared" ]; then
    command -v depmod >/dev/null || die "depmod not found (apt-get install kmod)"
    work=$(mktemp -d "$cache/.prepare.XXXXXX")
    log "downloading $package $version into $cache"
    # apt-get download writes into the current directory; as root it warns that the
    # download is not sandboxed (the _apt user cannot write there): harmless.
    (cd "$work" && apt-get download -qq "$package=$version" 2>&1 | grep -v "unsandboxed as root" >&2) || true
    deb=$(find "$work" -maxdepth 1 -name "${package}_*.deb" | head -n 1)
    [ -n "$deb" ] || { rm -rf "$work"; die "apt-get download $package=$version failed"; }
    mkdir "$work/root"
    dpkg-deb -x "$deb" "$work/root"
    [ -f "$work/root/boot/vmlinuz-$kernel_version" ] || { rm -rf "$work"; die "$deb has no boot/vmlinuz-$kernel_version"; }
    # The package's postinst runs depmod; unpacked by hand there is no modules.dep yet.
    depmod -b "$work/root" "$kernel_version"
    rm -rf "$dir"
    mv "$work/root" "$dir"
    rm -rf "$work"
    touch "$dir/.prepared"
  fi
  [ -f "$kernel_image" ] && [ -f "$modules_dir/modules.dep" ] || die "$dir is incomplete: remove it and run prepare again"
  if [ ! -f "$dir/boot/vmlinux-$kernel_version" ] && [ ! -e "$dir/.no-vmlinux" ]; then
    extract_vmlinux "$kernel_image" "$dir/boot/vmlinux-$kernel_version" || {
      log "could not extract vmlinux from the bzImage: booting the bzImage"
      touch "$dir/.no-vmlinux"
    }
  fi
  echo "$package $version" >"$current.tmp.$$" && mv "$current.tmp.$$" "$current"
  exec {lock_fd}>&-
  boot_image=$kernel_image
  vmlinux_image=""
  [ ! -f "$dir/boot/vmlinux-$kernel_version" ] || vmlinux_image=$dir/boot/vmlinux-$kernel_version
  if [ "${LUNA_VMM_BOOT:-pvh}" = pvh ] && [ -f "$dir/boot/vmlinux-$kernel_version" ] &&
     readelf -n "$dir/boot/vmlinux-$kernel_version" 2>/dev/null | grep -Eq '0x00000012|PHYS32_ENTRY'; then
    boot_image=$dir/boot/vmlinux-$kernel_version
  fi
}

# --- initramfs building -------------------------------------------------------------

norm() { echo "${1//-/_}"; }

# module_closure MODULE: appends the modules.dep paths of MODULE and of its
# dependencies to the array module_order, dependencies first, each once (the caller
# declares module_order and the associative array seen_modules).  Modules built into
# the kernel (modules.builtin) are skipped.
module_closure() {
  local name line path dep i
  local -a dep_list
  name=$(norm "$1")
  line=$(awk -F: -v want="$name" '{
      base = $1; sub(/.*\//, "", base); sub(/\.ko(\.(xz|gz|zst))?$/, "", base); gsub(/-/, "_", base)
      if (base == want) { print; exit }
    }' "$modules_dir/modules.dep")
  if [ -z "$line" ]; then
    if awk -v want="$name" '{ base = $0; sub(/.*\//, "", base); sub(/\.ko$/, "", base); gsub(/-/, "_", base)
                              if (base == want) found = 1 } END { exit !found }' "$modules_dir/modules.builtin"; then
      return 0
    fi
    die "module $1 not found in $modules_dir/modules.dep"
  fi
  path=${line%%:*}
  [ -z "${seen_modules[$path]:-}" ] || return 0
  seen_modules[$path]=1
  # modules.dep lists dependencies so that the last one is loaded first.
  read -r -a dep_list <<<"${line#*:}"
  for ((i = ${#dep_list[@]} - 1; i >= 0; i--)); do
    dep=${dep_list[i]##*/}
    module_closure "${dep%%.ko*}"
  done
  module_order+=("$path")
}

# add_modules ROOT "NAME[ OPTION=VALUE...]"...: copies each module and its
# dependencies, decompressed, into ROOT/lib/modules/ and lists them, in load order and
# with their options, in ROOT/lib/modules/luna.load (read by nested/preamble.sh).
add_modules() {
  local root=$1 spec name path file base
  shift
  local -A seen_modules=() options=()
  local -a module_order=()
  mkdir -p "$root/lib/modules"
  for spec in "$@"; do
    name=${spec%% *}
    module_closure "$name"
    [ "$spec" = "$name" ] || options[$(norm "$name")]=${spec#* }
  done
  for path in "${module_order[@]}"; do
    file=$modules_dir/$path
    base=${path##*/}
    case "$base" in
      *.ko.xz) base=${base%.xz}; xz -dc "$file" >"$root/lib/modules/$base" ;;
      *.ko.zst) base=${base%.zst}; zstd -qdc "$file" >"$root/lib/modules/$base" ;;
      *.ko.gz) base=${base%.gz}; gzip -dc "$file" >"$root/lib/modules/$base" ;;
      *.ko) cp "$file" "$root/lib/modules/$base" ;;
      *) die "unexpected module file $path" ;;
    esac
    echo "$base ${options[$(norm "${base%.ko}")]:-}" >>"$root/lib/modules/luna.load"
  done
}

# base_cpio: prints the path of a cached cpio archive of busybox (static) with a
# symlink for each of its applets, and the skeleton directories, from which every
# initramfs root starts.  Cached because making ~270 links one ln at a time costs
# seconds where forks are slow.
base_cpio() {
  local busybox sum out root applet
  local -a links=() dirs=()
  busybox=$(command -v busybox) || die "busybox not found (apt-get install busybox-static)"
  if ! file_is_static "$busybox"; then
    if [ -x /bin/busybox ] && file_is_static /bin/busybox; then busybox=/bin/busybox
    else die "$busybox is not statically linked (apt-get install busybox-static)"; fi
  fi
  sum=$(sha256sum "$busybox" | cut -c1-16)
  out=$cache/busybox-root-$sum.cpio
  if [ ! -f "$out" ]; then
    mkdir -p "$cache"
    root=$(mktemp -d "$cache/.busybox-root.XXXXXX")
    dirs=(bin sbin usr/bin usr/sbin dev proc sys tmp run etc root lib/modules luna)
    while read -r applet; do
      applet=${applet#/}
      case "$applet" in ""|bin/busybox|linuxrc) continue ;; esac
      links+=("$applet")
      [[ "$applet" != */* ]] || dirs+=("${applet%/*}")
    done < <("$busybox" --list-full)
    (cd "$root" && mkdir -p "${dirs[@]}")
    cp "$busybox" "$root/bin/busybox"
    # One process for all the links (perl is Essential in Debian).
    (cd "$root" && perl -e 'for (@ARGV) { symlink("/bin/busybox", $_) or die "symlink $_: $!\n" }' "${links[@]}")
    echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
    echo "root:x:0:" >"$root/etc/group"
    printf '127.0.0.1 localhost\n10.0.2.2 host\n' >"$root/etc/hosts"
    make_cpio "$root" "$out.tmp.$$"
    mv "$out.tmp.$$" "$out"
    rm -rf "$root"
  fi
  echo "$out"
}

# unpack_base ROOT: ROOT starts as base_cpio's tree.
unpack_base() {
  local base
  base=$(base_cpio)
  mkdir -p "$1"
  (cd "$1" && cpio --quiet -idm --no-absolute-filenames <"$base")
}

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

# copy_binary ROOT HOST_PATH [NAME]: to ROOT/usr/bin/NAME (default: its own name),
# with its shared libraries and ELF interpreter at their host paths.
copy_binary() {
  local root=$1 bin=$2 name=${3:-${2##*/}} lib
  [ -f "$bin" ] && [ -x "$bin" ] || die "--binary $bin: not an executable file"
  mkdir -p "$root/usr/bin"
  cp -L "$bin" "$root/usr/bin/$name"
  file_is_static "$bin" && return 0
  # "libx.so.1 => /lib/.../libx.so.1 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)",
  # "linux-vdso.so.1 (0x...)"; "libx.so.1 => not found" is an error.
  if ldd "$bin" | grep -q "=> not found"; then
    die "--binary $bin: ldd reports missing libraries: $(ldd "$bin" | grep "not found" | tr -s ' \t\n' ' ')"
  fi
  while read -r lib; do
    [ -n "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    [ -e "$root$lib" ] || cp -L "$lib" "$root$lib"
  done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
}

# copy_file ROOT HOST:GUEST
copy_file() {
  local root=$1 spec=$2 host guest
  host=${spec%%:*}
  guest=${spec#*:}
  [ "$host" != "$spec" ] && [ -n "$host" ] && [[ "$guest" == /* ]] || die "--file $spec: want HOST_PATH:/GUEST_PATH"
  [ -e "$host" ] || die "--file $spec: $host does not exist"
  mkdir -p "$root$(dirname "$guest")"
  rm -rf "${root:?}$guest"
  cp -a -L "$host" "$root$guest"
}

# make_cpio ROOT OUTPUT: an uncompressed newc archive, every file owned by root in
# the guest whoever builds it.
make_cpio() {
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 >"$2")
}

# kvm_smoke, built once per source version into the cache.
kvm_smoke_binary() {
  local src=$nested_dir/kvm_smoke.c sum out
  sum=$(sha256sum "$src" | cut -c1-16)
  out=$cache/kvm_smoke-$sum
  if [ ! -x "$out" ]; then
    mkdir -p "$cache"
    gcc -static -O2 -Wall -o "$out.tmp.$$" "$src" || die "building kvm_smoke failed"
    mv "$out.tmp.$$" "$out"
  fi
  echo "$out"
}

tmp=""
qemu_pid=""
streamer_pid=""
watcher_pid=""
cleanup() {
  [ -z "$qemu_pid" ] || kill "$qemu_pid" 2>/dev/null || true
  [ -z "$watcher_pid" ] || kill "$watcher_pid" 2>/dev/null || true
  [ -z "$streamer_pid" ] || kill "$streamer_pid" 2>/dev/null || true
  [ -z "$tmp" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "nested_kvm: interrupted" >&2; exit 130' INT
trap 'echo "nested_kvm: terminated" >&2; exit 143' TERM

# --- commands -------------------------------------------------------------------------

cmd_prepare() {
  [ $# -eq 0 ] || usage
  prepare
  echo "kernel=$kernel_image"
  echo "modules=$modules_dir"
  [ -z "$vmlinux_image" ] || echo "vmlinux=$vmlinux_image"
}

# watch_for_lockup CONSOLE_LOG PID MARK: stop PID (QEMU's timeout) once the outer kernel reports a
# CPU soft-locked for 45 s or more, or a task blocked for 30 s (outer-init.sh sets that hung-task
# timeout), or the guest script prints "@@LUNA-NESTED-STUCK@@ WHY" (a process it killed with
# SIGKILL did not die), writing the report to MARK.  Under TCG's nested SVM an outer CPU now and then never
# leaves a nested guest: the soft-lockup watchdog then reports it every 26 s, stuck for good, or
# (when nothing spins) tasks waiting on it block; lunavm's vCPU thread cannot even be killed.
# One soft-lockup report of 20-30 s can also be a busy host, which passes.
watch_for_lockup() {
  local console=$1 pid=$2 mark=$3 report
  while kill -0 "$pid" 2>/dev/null; do
    report=$(sed -n -e 's/.*\(soft lockup - CPU#[0-9]* stuck for \([0-9]*\)s!.*\)/\2 \1/p' \
                    -e 's/.*\(INFO: task .* blocked for more than [0-9]* seconds\).*/999 \1/p' \
                    -e 's/.*@@LUNA-NESTED-STUCK@@ *\(.*\)/999 \1/p' "$console" 2>/dev/null |
      awk '$1 >= 45 { $1 = ""; print substr($0, 2); exit }')
    if [ -n "$report" ]; then
      echo "$report" >"$mark"
      kill "$pid" 2>/dev/null || true
      return 0
    fi
    sleep 2
  done
}

cmd_run() {
  local -a binaries=() files=()
  local mem=2048 smp=2 timeout=300 script=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --binary) [ $# -ge 2 ] || usage; binaries+=("$2"); shift 2 ;;
      --file) [ $# -ge 2 ] || usage; files+=("$2"); shift 2 ;;
      --mem) [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || usage; mem=$2; shift 2 ;;
      --smp) [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || usage; smp=$2; shift 2 ;;
      --timeout) [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || usage; timeout=$2; shift 2 ;;
      --) shift; [ $# -eq 1 ] || usage; script=$1; shift ;;
      *) usage ;;
    esac
  done
  [ -n "$script" ] || usage
  [ -f "$script" ] || die "guest script $script not found"
  local qemu=${LUNA_VMM_QEMU:-qemu-system-x86_64} nic=${LUNA_VMM_NIC:-virtio-net-pci}
  local -a nic_modules
  command -v "$qemu" >/dev/null || die "$qemu not found (apt-get install qemu-system-x86)"
  case "$nic" in
    virtio-net-pci) nic_modules=(virtio_pci virtio_net) ;;
    e1000) nic_modules=(e1000) ;;
    *) die "LUNA_VMM_NIC=$nic: want virtio-net-pci or e1000" ;;
  esac

  quiet=1 prepare
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/nested_kvm.XXXXXX")
  local root=$tmp/root spec bin
  unpack_base "$root"
  add_modules "$root" irqbypass kvm ccp "kvm_amd ${LUNA_VMM_KVM_AMD:-nested=1}" "${nic_modules[@]}"
  copy_binary "$root" "$(kvm_smoke_binary)" kvm_smoke
  for bin in "${binaries[@]}"; do copy_binary "$root" "$bin"; done
  for spec in "${files[@]}"; do copy_file "$root" "$spec"; done
  cat "$nested_dir/preamble.sh" "$nested_dir/outer-init.sh" >"$root/init"
  chmod 755 "$root/init"
  cp "$script" "$root/luna/guest.sh"
  make_cpio "$root" "$tmp/initrd.cpio"
  rm -rf "$root"

  # 10.0.2.2 is slirp's alias for the host's loopback; romfile= skips the NIC's iPXE
  # option ROM (not needed with -kernel, and it saves boot time).
  # init=/init too: if /init cannot run, the kernel panics (and QEMU exits) instead
  # of trying busybox's /sbin/init and waiting for the timeout.
  local append="console=ttyS0 quiet panic=-1 rdinit=/init init=/init mitigations=off ${LUNA_VMM_APPEND:-}"
  # shellcheck disable=SC2054 # commas inside QEMU option values
  local -a qemu_cmd=(
    "$qemu" -accel tcg -cpu max -m "$mem" -smp "$smp" -nographic -no-reboot
    -kernel "$boot_image" -initrd "$tmp/initrd.cpio" -append "$append"
    -netdev user,id=n0 -device "$nic,netdev=n0,romfile="
  )
  log "booting $(basename "$boot_image") under TCG (timeout ${timeout}s)"
  mkfifo "$tmp/console"
  # CRs and the terminal escapes SeaBIOS and the kernel send are removed.
  sed -u -e 's/\r$//' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' <"$tmp/console" | tee "$tmp/console.log" &
  streamer_pid=$!
  local started=$SECONDS rc=0
  timeout -k 5 "$timeout" "${qemu_cmd[@]}" </dev/null >"$tmp/console" 2>&1 &
  qemu_pid=$!
  watch_for_lockup "$tmp/console.log" "$qemu_pid" "$tmp/lockup" &
  watcher_pid=$!
  wait "$qemu_pid" || rc=$?
  qemu_pid=""
  kill "$watcher_pid" 2>/dev/null || true
  wait "$watcher_pid" 2>/dev/null || true
  watcher_pid=""
  wait "$streamer_pid" || true
  streamer_pid=""
  # The kernel's last message ("reboot: Power down") has no newline.
  [ -z "$(tail -c 1 "$tmp/console.log")" ] || echo
  local elapsed=$((SECONDS - started)) status
  status=$(sed -n "s/^.*${marker}\([0-9]\{1,3\}\)@@\$/\1/p" "$tmp/console.log" | tail -n 1)
  if [ -n "$status" ]; then
    [ "$rc" -ne 124 ] || echo "nested_kvm: warning: the guest did not power off after its script ended" >&2
    log "guest script exited $status (${elapsed}s)"
    return "$status"
  fi
  if [ -e "$tmp/lockup" ]; then
    echo "nested_kvm: LOCKUP: the outer kernel reported a CPU or a task stuck ($(cat "$tmp/lockup")); QEMU was stopped after ${elapsed}s" >&2
    return 126
  fi
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "nested_kvm: TIMEOUT: the guest ran out of its ${timeout}s (--timeout) without finishing its script" >&2
    return 124
  fi
  echo "nested_kvm: NO EXIT MARKER: QEMU exited ($rc) after ${elapsed}s but the guest never reported its script's status (kernel panic? see the console output above)" >&2
  return 125
}

cmd_inner_initrd() {
  [ $# -ge 2 ] || usage
  local out=$1 init_script=$2 spec bin
  shift 2
  local -a binaries=() files=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --binary) [ $# -ge 2 ] || usage; binaries+=("$2"); shift 2 ;;
      --file) [ $# -ge 2 ] || usage; files+=("$2"); shift 2 ;;
      *) usage ;;
    esac
  done
  [ -f "$init_script" ] || die "init script $init_script not found"
  quiet=1 prepare
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/nested_kvm.XXXXXX")
  local root=$tmp/root
  unpack_base "$root"
  add_modules "$root" virtio_mmio virtio_blk virtio_net virtio_rng
  for bin in "${binaries[@]}"; do copy_binary "$root" "$bin"; done
  for spec in "${files[@]}"; do copy_file "$root" "$spec"; done
  {
    cat "$nested_dir/preamble.sh"
    echo "# --- $(basename "$init_script") ---"
    sed '1{/^#!/d}' "$init_script"
    echo
    cat "$nested_dir/inner-epilogue.sh"
  } >"$root/init"
  chmod 755 "$root/init"
  make_cpio "$root" "$tmp/initrd.cpio"
  gzip -6 <"$tmp/initrd.cpio" >"$tmp/initrd.cpio.gz"
  mkdir -p "$(dirname "$out")"
  mv "$tmp/initrd.cpio.gz" "$out"
}

[ $# -ge 1 ] || usage
command=$1
shift
case "$command" in
  prepare) cmd_prepare "$@" ;;
  run) cmd_run "$@" ;;
  inner-initrd) cmd_inner_initrd "$@" ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
