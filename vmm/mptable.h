/*
 * mptable: the Intel MultiProcessor Specification 1.4 tables that tell a
 * guest without ACPI how many CPUs it has and how ISA interrupts reach the
 * I/O APIC (the in-kernel one KVM_CREATE_IRQCHIP provides).
 *
 * One floating pointer structure followed by the configuration table:
 * a processor entry per vCPU (local APIC id = vCPU index), one ISA bus,
 * the I/O APIC, an interrupt entry per IOAPIC pin (ISA IRQ n on pin n, as
 * KVM's default routing wires them) and the two local interrupts (ExtINT
 * on LINT0, NMI on LINT1).  Pure: it writes into a buffer.
 */
#ifndef LUNA_VMM_MPTABLE_H
#define LUNA_VMM_MPTABLE_H

#include <stddef.h>
#include <stdint.h>

#define MPTABLE_MAX_CPUS 254u   /* 8-bit APIC ids, one kept for the I/O APIC */
#define MPTABLE_IOAPIC_PINS 24u

/* Bytes mptable_build writes for cpus processors. */
size_t mptable_size(unsigned cpus);

/*
 * Write the tables for cpus processors into buffer, which the guest will
 * see at guest_address.  Returns the size, or -EINVAL (cpus 0 or above
 * MPTABLE_MAX_CPUS) or -ENOSPC (capacity too small).
 */
long mptable_build(uint8_t *buffer, size_t capacity, uint32_t guest_address, unsigned cpus);

/* The I/O APIC id the table announces (after the processors' ids). */
unsigned mptable_ioapic_id(unsigned cpus);

#endif
