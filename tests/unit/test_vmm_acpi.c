/*
 * The ACPI tables of vmm/acpi_tables.h: pointers, checksums, the FADT's PM
 * blocks, the MADT's entries, the DSDT's devices and _S5.
 *
 * (Rewritten by the ACPI-builder helper after its own test of the same
 * name overwrote the original by accident; see test_vmm_acpi_builder.c
 * for that helper's separate module.)
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "common/byte_order.h"
#include "vmm/acpi_tables.h"
#include "vmm/memory_layout.h"

#define TABLES_AT 0xe0000u

static uint8_t tables[0x10000];

static const struct acpi_mmio_device three_devices[] = {
    {LAYOUT_VIRTIO_MMIO_BASE + 0 * LAYOUT_VIRTIO_MMIO_STRIDE, LAYOUT_VIRTIO_MMIO_SIZE, 5},
    {LAYOUT_VIRTIO_MMIO_BASE + 1 * LAYOUT_VIRTIO_MMIO_STRIDE, LAYOUT_VIRTIO_MMIO_SIZE, 6},
    {LAYOUT_VIRTIO_MMIO_BASE + 2 * LAYOUT_VIRTIO_MMIO_STRIDE, LAYOUT_VIRTIO_MMIO_SIZE, 7},
};

static uint8_t sum(const uint8_t *bytes, size_t length)
{
    uint8_t total = 0;
    for (size_t i = 0; i < length; i++)
        total = (uint8_t)(total + bytes[i]);
    return total;
}

static long build(unsigned cpus)
{
    struct acpi_layout layout = {.cpus = cpus, .ioapic_id = cpus, .devices = three_devices, .device_count = 3};
    return acpi_tables_build(tables, sizeof(tables), TABLES_AT, &layout);
}

static const uint8_t *table_at(uint64_t address, const char *signature, long built)
{
    cr_assert_geq(address, TABLES_AT);
    size_t offset = (size_t)(address - TABLES_AT);
    cr_assert_lt(offset + 36, (size_t)built);
    const uint8_t *table = tables + offset;
    cr_assert_eq(memcmp(table, signature, 4), 0, "expected %s", signature);
    uint32_t length = load_le32(table + 4);
    cr_assert_leq(offset + length, (size_t)built);
    cr_assert_eq(sum(table, length), 0, "%s checksum", signature);
    return table;
}

static unsigned count(const uint8_t *bytes, size_t length, const void *needle, size_t needle_length)
{
    unsigned found = 0;
    for (size_t i = 0; i + needle_length <= length; i++)
        found += memcmp(bytes + i, needle, needle_length) == 0;
    return found;
}

Test(vmm_acpi, two_cpus_three_devices)
{
    long built = build(2);
    cr_assert_gt(built, 0, "built: %ld", built);

    cr_assert_eq(memcmp(tables, "RSD PTR ", 8), 0);
    cr_assert_eq(sum(tables, 20), 0);
    cr_assert_eq(sum(tables, 36), 0);
    cr_assert_eq(tables[15], 2);

    const uint8_t *xsdt = table_at(load_le64(tables + 24), "XSDT", built);
    cr_assert_eq(load_le32(xsdt + 4), 36 + 16);
    const uint8_t *fadt = table_at(load_le64(xsdt + 36), "FACP", built);
    const uint8_t *madt = table_at(load_le64(xsdt + 44), "APIC", built);

    cr_assert_eq(load_le32(fadt + 4), 276);
    cr_assert_eq(load_le16(fadt + 46), ACPI_SCI_IRQ);
    cr_assert_eq(load_le32(fadt + 56), ACPI_PM1_EVENT_PORT);
    cr_assert_eq(load_le32(fadt + 64), ACPI_PM1_CONTROL_PORT);
    cr_assert_eq(load_le32(fadt + 112) & (1u << 4), 0, "PWR_BUTTON clear: a fixed-feature power button (system_powerdown)");
    cr_assert_eq(load_le32(fadt + 40), load_le64(fadt + 140), "DSDT and X_DSDT agree");
    uint32_t facs = load_le32(fadt + 36);
    cr_assert_eq(facs % 64, 0, "the FACS is 64-byte aligned");
    cr_assert_eq(memcmp(tables + (facs - TABLES_AT), "FACS", 4), 0);

    cr_assert_eq(load_le32(madt + 36), LAYOUT_LOCAL_APIC_ADDRESS);
    cr_assert_eq(load_le32(madt + 4), 44 + 2 * 8 + 12 + 6);
    cr_assert_eq(madt[44 + 3], 0, "APIC id 0");
    cr_assert_eq(madt[52 + 3], 1, "APIC id 1");
    cr_assert_eq(madt[60], 1, "then the I/O APIC");
    cr_assert_eq(madt[62], 2);
    cr_assert_eq(load_le32(madt + 64), LAYOUT_IOAPIC_ADDRESS);

    const uint8_t *dsdt = table_at(load_le32(fadt + 40), "DSDT", built);
    uint32_t length = load_le32(dsdt + 4);
    cr_assert_eq(count(dsdt, length, "LNRO0005", 8), 3);
    cr_assert_eq(count(dsdt, length, "_S5_", 4), 1);
    for (unsigned i = 0; i < 3; i++) {
        uint8_t window[5] = {0x01}; /* read-write, then the base address */
        uint32_t base = (uint32_t)three_devices[i].base;
        memcpy(window + 1, &base, 4);
        cr_assert_eq(count(dsdt, length, window, sizeof(window)), 1, "device %u's window", i);
    }
}

Test(vmm_acpi, errors)
{
    struct acpi_layout layout = {.cpus = 0, .devices = three_devices, .device_count = 3};
    cr_assert_eq(acpi_tables_build(tables, sizeof(tables), TABLES_AT, &layout), -EINVAL);
    layout.cpus = 255;
    cr_assert_eq(acpi_tables_build(tables, sizeof(tables), TABLES_AT, &layout), -EINVAL);
    layout.cpus = 2;
    cr_assert_eq(acpi_tables_build(tables, sizeof(tables), TABLES_AT + 8, &layout), -EINVAL);
    long built = acpi_tables_build(tables, sizeof(tables), TABLES_AT, &layout);
    cr_assert_gt(built, 0);
    cr_assert_eq(acpi_tables_build(tables, (size_t)built - 1, TABLES_AT, &layout), -ENOSPC);
}
