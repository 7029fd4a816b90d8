/*
 * kvm_vm: the virtual machine as /dev/kvm provides it.
 *
 * Opens /dev/kvm, checks the API version and the capabilities lunavm
 * relies on, creates the VM with KVM's in-kernel interrupt controllers
 * (PIC, I/O APIC, local APICs) and PIT, registers guest RAM, and offers
 * the few VM-wide operations device models need: interrupt lines and
 * ioeventfds.  All functions are thread-safe (plain ioctls on the VM fd).
 */
#ifndef LUNA_VMM_KVM_VM_H
#define LUNA_VMM_KVM_VM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/guest_memory.h"

struct kvm_vm {
    int kvm_fd;
    int vm_fd;
    int vcpu_mmap_size;
    int max_vcpus;
    struct kvm_cpuid2 *supported_cpuid; /* from KVM_GET_SUPPORTED_CPUID */
};

/* 0, or -errno with a message naming what is missing. */
int kvm_vm_create(struct kvm_vm *vm, char **error_message);
void kvm_vm_close(struct kvm_vm *vm);

int kvm_vm_add_memory(struct kvm_vm *vm, const struct guest_memory *memory, char **error_message);

/* Drive an interrupt line (GSI) high or low.  0 or -errno. */
int kvm_vm_set_irq_line(struct kvm_vm *vm, unsigned irq, bool level);
/* An edge: high then low, for edge-triggered ISA interrupts. */
int kvm_vm_pulse_irq(struct kvm_vm *vm, unsigned irq);

/*
 * Make a guest write to [address, address + length) (port space when pio)
 * signal fd inside KVM, without an exit to user space.  0 or -errno.
 */
int kvm_vm_add_ioeventfd(struct kvm_vm *vm, uint64_t address, unsigned length, bool pio, int fd);

#endif
