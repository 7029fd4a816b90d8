#include "vmm/cpuid.h"

void cpuid_adjust_for_vcpu(struct kvm_cpuid_entry2 *entries, unsigned count, unsigned vcpu_index,
                           unsigned vcpu_count)
{
    for (unsigned i = 0; i < count; i++) {
        struct kvm_cpuid_entry2 *entry = &entries[i];
        switch (entry->function) {
        case 1:
            entry->ecx |= CPUID_HYPERVISOR_BIT;
            /* EBX[31:24] initial APIC id; [23:16] logical processors per package (with HTT). */
            entry->ebx = (entry->ebx & 0x0000ffffu) | (vcpu_index << 24) | ((vcpu_count & 0xffu) << 16);
            break;
        case 0xb:
        case 0x1f:
            entry->edx = vcpu_index; /* x2APIC id */
            break;
        default:
            break;
        }
    }
}
