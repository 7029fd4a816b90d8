# shellcheck shell=sh
# Inner-guest /init epilogue (tests/vmm/nested_kvm.sh inner-initrd): reached when the
# INIT_SCRIPT's code falls off its end.  PID 1 must not exit (the kernel would panic),
# so report the last status and power off: through ACPI if the VMM offers it, else the
# kernel halts every CPU with interrupts disabled (a HLT exit the VMM can recognise).
_status=$?
sync
echo
echo "@@LUNA-INNER-EXIT=$_status@@"
poweroff -f
while :; do sleep 3600; done
