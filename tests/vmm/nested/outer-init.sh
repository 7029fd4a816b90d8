# shellcheck shell=sh
# Outer-guest part of /init (appended to preamble.sh by tests/vmm/nested_kvm.sh run).
# Brings up the network like QEMU's user-mode network expects, runs the guest script
# and reports its status in a marker line that the harness looks for, then powers off.
ip link set lo up
_i=0
while [ ! -e /sys/class/net/eth0 ] && [ $_i -lt 50 ]; do sleep 0.1; _i=$((_i + 1)); done
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
else
    echo "luna-init: no eth0, networking is down" >&2
fi
echo "nameserver 10.0.2.3" > /etc/resolv.conf
[ -e /dev/kvm ] || echo "luna-init: warning: no /dev/kvm (kvm_amd failed to load?)" >&2
# A task blocked this long means the VM is stuck (tests/vmm/nested_kvm.sh's LOCKUP): say so soon.
echo 30 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null || true
export LUNA_HOST=10.0.2.2
cd /
echo; echo "luna-init: running guest script (uptime $(cut -d' ' -f1 /proc/uptime) s)"
/bin/sh /luna/guest.sh
_status=$?
sync
echo
echo "@@LUNA-NESTED-KVM-EXIT=$_status@@"
poweroff -f
sleep 60
