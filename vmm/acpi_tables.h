/*
 * acpi_tables: the few ACPI tables a Linux guest needs to find lunavm's
 * virtio-mmio devices and CPUs when its kernel cannot take them from the
 * command line (Debian's lacks CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES).
 *
 * RSDP -> XSDT -> FADT (with FACS and DSDT) and MADT.  The DSDT declares
 * each virtio-mmio window as an "LNRO0005" device (the ACPI id Linux's
 * virtio_mmio driver matches) and the _S5 sleep state, so that a write of
 * SLP_TYP 5 | SLP_EN to the PM1a control block (acpi_pm.h) powers the VM
 * off.  The FADT is a full (not hardware-reduced) one, so the PIT, RTC
 * and PIC stay what Linux uses.  The MADT lists one local APIC per vCPU
 * (ids as in the MP table, which stays for acpi=off) and the I/O APIC.
 * Pure: the tables are built into a buffer the caller places in guest RAM.
 */
#ifndef LUNA_VMM_ACPI_TABLES_H
#define LUNA_VMM_ACPI_TABLES_H

#include <stddef.h>
#include <stdint.h>

#define ACPI_PM1_EVENT_PORT 0x600u   /* PM1a_EVT_BLK: status and enable, 4 bytes */
#define ACPI_PM1_CONTROL_PORT 0x604u /* PM1a_CNT_BLK, 2 bytes */
#define ACPI_SCI_IRQ 9u
#define ACPI_S5_SLEEP_TYPE 5u
#define ACPI_MAX_DEVICES 17u /* 16 disks and the virtio-rng */

struct acpi_mmio_device {
    uint64_t base;
    uint32_t size;
    uint32_t irq;
};

struct acpi_layout {
    unsigned cpus;
    unsigned ioapic_id;
    const struct acpi_mmio_device *devices;
    unsigned device_count;
};

/*
 * Build every table into buffer, which the guest sees at guest_address
 * (16-byte aligned).  The RSDP comes first, so guest_address is the RSDP's
 * address.  Returns the bytes used, -EINVAL or -ENOSPC.
 */
long acpi_tables_build(uint8_t *buffer, size_t capacity, uint64_t guest_address, const struct acpi_layout *layout);

/* The DSDT's AML body (without the table header) into buffer; bytes used or -ENOSPC. */
long acpi_dsdt_body(uint8_t *buffer, size_t capacity, const struct acpi_mmio_device *devices, unsigned count);

#endif
