/*
 * cpuid: what each vCPU's CPUID instruction answers.
 *
 * Starts from KVM_GET_SUPPORTED_CPUID (what host and KVM can offer) and
 * adjusts per vCPU: the hypervisor bit (CPUID.1:ECX[31]) set, without which
 * Linux never looks at KVM's paravirtual leaves (0x40000000 "KVMKVMKVM")
 * and so finds no kvm-clock; the initial APIC id in leaf 1 and the x2APIC
 * id in leaves 0xB/0x1F equal to the vCPU index, matching the MP table.
 */
#ifndef LUNA_VMM_CPUID_H
#define LUNA_VMM_CPUID_H

#include <linux/kvm.h>

#define CPUID_HYPERVISOR_BIT (1u << 31)
#define CPUID_KVM_SIGNATURE_LEAF 0x40000000u

/* Adjust a copy of the supported entries for vCPU index (count entries). */
void cpuid_adjust_for_vcpu(struct kvm_cpuid_entry2 *entries, unsigned count, unsigned vcpu_index,
                           unsigned vcpu_count);

#endif
