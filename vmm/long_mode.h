/*
 * long_mode: the CPU state in which the 64-bit Linux boot protocol expects
 * to be entered, so lunavm needs no firmware and no real-mode code.
 *
 * Writes a flat GDT (__BOOT_CS 0x10, __BOOT_DS 0x18 as boot.rst demands,
 * and a TSS descriptor KVM insists on) and identity page tables mapping
 * the first 4 GiB with 2 MiB pages into guest memory, and fills the
 * special registers: CR0 with paging and protection, CR4.PAE, EFER.LME/LMA,
 * CR3 at the tables.  The kernel replaces all of it within microseconds.
 */
#ifndef LUNA_VMM_LONG_MODE_H
#define LUNA_VMM_LONG_MODE_H

#include <linux/kvm.h>

#include "vmm/guest_memory.h"

#define BOOT_CODE_SELECTOR 0x10u
#define BOOT_DATA_SELECTOR 0x18u
#define BOOT_TSS_SELECTOR 0x20u

#define X86_CR0_PE 0x1ull
#define X86_CR0_MP 0x2ull
#define X86_CR0_ET 0x10ull
#define X86_CR0_NE 0x20ull
#define X86_CR0_WP 0x10000ull
#define X86_CR0_AM 0x40000ull
#define X86_CR0_PG 0x80000000ull
#define X86_CR4_PAE 0x20ull
#define X86_EFER_LME 0x100ull
#define X86_EFER_LMA 0x400ull

/* Write the GDT and the page tables into guest memory.  0, or -EFAULT if low RAM is too small. */
int long_mode_write_tables(const struct guest_memory *memory);

/* Set sregs (as read from KVM_GET_SREGS) for the 64-bit entry. */
void long_mode_set_sregs(struct kvm_sregs *sregs);

#endif
