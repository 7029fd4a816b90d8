#!/bin/sh
# /init preamble shared by the outer guest and the inner-guest initramfs that
# tests/vmm/nested_kvm.sh builds (busybox sh, PID 1).  It mounts the pseudo file
# systems, points stdio at the console and loads the modules listed, in order, in
# /lib/modules/luna.load ("FILE [OPTION=VALUE]..." per line, dependencies first).
#
# busybox insmod does not read /proc/cmdline as modprobe does, so options given on
# the kernel command line as MODULE.OPTION=VALUE (e.g. virtio_mmio.device=4K@0xd0000000:5,
# kvm_amd.nested=1) are collected here and passed to insmod; '-' and '_' are the
# same in module names, as for the kernel.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd 2>/dev/null
hostname "${LUNA_HOSTNAME:-luna-guest}"

luna_module_options() { # MODULE_NAME: its MODULE.OPTION=VALUE words from /proc/cmdline
    _want=$(echo "$1" | tr - _)
    for _word in $(cat /proc/cmdline); do
        case "$_word" in
            *.*=*) ;;
            *) continue ;;
        esac
        _mod=$(echo "${_word%%.*}" | tr - _)
        [ "$_mod" = "$_want" ] && echo "${_word#*.}"
    done
}

if [ -f /lib/modules/luna.load ]; then
    while read -r _file _opts; do
        [ -n "$_file" ] || continue
        _name=$(basename "$_file" .ko)
        # shellcheck disable=SC2046,SC2086 # word splitting wanted: one option per word
        insmod "/lib/modules/$_file" $_opts $(luna_module_options "$_name") ||
            echo "luna-init: insmod $_file $_opts failed" >&2
    done < /lib/modules/luna.load
fi
unset _file _opts _name _want _word _mod
