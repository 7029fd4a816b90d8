/*
 * memory_layout: where lunavm puts things in guest-physical memory.
 *
 * One fixed map, in the spirit of Firecracker's: the boot structures sit
 * in the first megabyte (below the 640 KiB hole), the kernel at 1 MiB, RAM
 * up to 3 GiB below the 32-bit MMIO hole and the rest above 4 GiB; the
 * virtio-mmio windows and the interrupt controllers live in the hole.
 */
#ifndef LUNA_VMM_MEMORY_LAYOUT_H
#define LUNA_VMM_MEMORY_LAYOUT_H

#include <stdint.h>

#define GUEST_PAGE_SIZE 4096u

/* First megabyte: the boot GDT, the zero page, the stack, the page tables. */
#define LAYOUT_GDT_ADDRESS 0x500u
#define LAYOUT_IDT_ADDRESS 0x520u
#define LAYOUT_ZERO_PAGE_ADDRESS 0x7000u
#define LAYOUT_BOOT_STACK_POINTER 0x8ff0u
#define LAYOUT_PML4_ADDRESS 0x9000u
#define LAYOUT_PDPT_ADDRESS 0xa000u
#define LAYOUT_PD_ADDRESS 0xb000u  /* four page directories: 0xb000..0xefff map 4 GiB */
#define LAYOUT_PAGE_DIRECTORY_COUNT 4u
#define LAYOUT_CMDLINE_ADDRESS 0x20000u
#define LAYOUT_CMDLINE_MAX 0x10000u
/* Conventional memory ends here; Linux looks for the RSDP and the MP table in the BIOS area. */
#define LAYOUT_BASE_MEMORY_END 0xa0000u
#define LAYOUT_BIOS_AREA_START 0xe0000u
#define LAYOUT_BIOS_AREA_END 0x100000u
#define LAYOUT_ACPI_ADDRESS 0xe0000u
#define LAYOUT_ACPI_SIZE 0x10000u
#define LAYOUT_MPTABLE_ADDRESS 0xf0000u

/* The protected-mode kernel of a bzImage, as the boot protocol's "high" load. */
#define LAYOUT_KERNEL_ADDRESS 0x100000u

/* RAM below the hole ends here at most; what -m asks beyond goes above 4 GiB. */
#define LAYOUT_LOW_RAM_LIMIT 0xc0000000ull
#define LAYOUT_HIGH_RAM_START 0x100000000ull

/* KVM needs three pages for its real-mode TSS and one for the identity map (VMX only). */
#define LAYOUT_IDENTITY_MAP_ADDRESS 0xfeffc000ull
#define LAYOUT_TSS_ADDRESS 0xfeffd000ull

/* virtio-mmio windows in the hole, one page apart. */
#define LAYOUT_VIRTIO_MMIO_BASE 0xd0000000ull
#define LAYOUT_VIRTIO_MMIO_STRIDE 0x1000ull
#define LAYOUT_VIRTIO_MMIO_SIZE 0x200ull

#define LAYOUT_IOAPIC_ADDRESS 0xfec00000u
#define LAYOUT_LOCAL_APIC_ADDRESS 0xfee00000u

#endif
