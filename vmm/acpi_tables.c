#include "vmm/acpi_tables.h"

#include <errno.h>
#include <string.h>

#include "vmm/memory_layout.h"
#include "common/byte_order.h"

#define HEADER_SIZE 36u
#define RSDP_SIZE 36u
#define FACS_SIZE 64u
#define FADT_SIZE 276u
#define FADT_REVISION 6
#define MADT_LOCAL_APIC_SIZE 8u
#define MADT_IOAPIC_SIZE 12u
#define MADT_LOCAL_NMI_SIZE 6u

#define FADT_WBINVD (1u << 0)
#define FADT_SLEEP_BUTTON_IS_METHOD (1u << 5)
#define BOOT_ARCH_LEGACY_DEVICES (1u << 0)
#define BOOT_ARCH_VGA_NOT_PRESENT (1u << 2)
#define BOOT_ARCH_MSI_NOT_SUPPORTED (1u << 3)
#define MADT_PCAT_COMPAT 1u /* the in-kernel 8259 pair exists */

static uint8_t checksum(const uint8_t *bytes, size_t length)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < length; i++)
        sum = (uint8_t)(sum + bytes[i]);
    return (uint8_t)(0 - sum);
}

static void header(uint8_t *table, const char *signature, uint32_t length, uint8_t revision)
{
    memcpy(table, signature, 4);
    store_le32(table + 4, length);
    table[8] = revision;
    memcpy(table + 10, "LUNAVM", 6);
    memcpy(table + 16, "LUNAVM  ", 8);
    store_le32(table + 24, 1);
    memcpy(table + 28, "LUNA", 4);
    store_le32(table + 32, 1);
}

static void seal(uint8_t *table, uint32_t length)
{
    table[9] = 0;
    table[9] = checksum(table, length);
}

static size_t align_up(size_t value, size_t alignment)
{
    return (value + alignment - 1) & ~(alignment - 1);
}

static void build_fadt(uint8_t *fadt, uint32_t facs, uint32_t dsdt)
{
    header(fadt, "FACP", FADT_SIZE, FADT_REVISION);
    store_le32(fadt + 36, facs);
    store_le32(fadt + 40, dsdt);
    store_le16(fadt + 46, ACPI_SCI_IRQ);
    /* SMI_CMD 0: already in ACPI mode, nothing to switch. */
    store_le32(fadt + 56, ACPI_PM1_EVENT_PORT);
    store_le32(fadt + 64, ACPI_PM1_CONTROL_PORT);
    fadt[88] = 4; /* PM1_EVT_LEN */
    fadt[89] = 2; /* PM1_CNT_LEN */
    fadt[108] = 0x32; /* the RTC's century register */
    store_le16(fadt + 109, BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_VGA_NOT_PRESENT | BOOT_ARCH_MSI_NOT_SUPPORTED);
    store_le32(fadt + 112, FADT_WBINVD | FADT_SLEEP_BUTTON_IS_METHOD);
    store_le64(fadt + 140, dsdt); /* X_DSDT, equal to DSDT as the spec requires when both are set */
    memcpy(fadt + 268, "LUNAVM  ", 8);
    seal(fadt, FADT_SIZE);
}

static uint32_t build_madt(uint8_t *madt, const struct acpi_layout *layout)
{
    uint8_t *p = madt + HEADER_SIZE;
    store_le32(p, LAYOUT_LOCAL_APIC_ADDRESS);
    store_le32(p + 4, MADT_PCAT_COMPAT);
    p += 8;
    for (unsigned cpu = 0; cpu < layout->cpus; cpu++) {
        p[0] = 0; /* processor local APIC */
        p[1] = MADT_LOCAL_APIC_SIZE;
        p[2] = (uint8_t)cpu; /* ACPI processor UID */
        p[3] = (uint8_t)cpu; /* APIC id, as in CPUID and the MP table */
        store_le32(p + 4, 1); /* enabled */
        p += MADT_LOCAL_APIC_SIZE;
    }
    p[0] = 1; /* I/O APIC */
    p[1] = MADT_IOAPIC_SIZE;
    p[2] = (uint8_t)layout->ioapic_id;
    p[3] = 0;
    store_le32(p + 4, LAYOUT_IOAPIC_ADDRESS);
    store_le32(p + 8, 0); /* GSI base: ISA IRQ n is GSI n is pin n, KVM's default routing */
    p += MADT_IOAPIC_SIZE;
    p[0] = 4; /* local APIC NMI on LINT1 of every processor */
    p[1] = MADT_LOCAL_NMI_SIZE;
    p[2] = 0xff;
    store_le16(p + 3, 0);
    p[5] = 1;
    p += MADT_LOCAL_NMI_SIZE;
    uint32_t length = (uint32_t)(p - madt);
    header(madt, "APIC", length, 4);
    seal(madt, length);
    return length;
}

long acpi_tables_build(uint8_t *buffer, size_t capacity, uint64_t guest_address, const struct acpi_layout *layout)
{
    if (layout->cpus == 0 || layout->cpus > 254 || layout->device_count > ACPI_MAX_DEVICES || (guest_address & 15))
        return -EINVAL;
    uint8_t dsdt_body[ACPI_MAX_DEVICES * 128 + 64];
    long body = acpi_dsdt_body(dsdt_body, sizeof(dsdt_body), layout->devices, layout->device_count);
    if (body < 0)
        return body;
    size_t madt_size = HEADER_SIZE + 8 + layout->cpus * MADT_LOCAL_APIC_SIZE + MADT_IOAPIC_SIZE + MADT_LOCAL_NMI_SIZE;
    /* RSDP, XSDT, FACS (64-byte aligned), FADT, MADT, DSDT. */
    size_t xsdt_at = align_up(RSDP_SIZE, 16);
    size_t xsdt_size = HEADER_SIZE + 2 * 8;
    size_t facs_at = align_up(xsdt_at + xsdt_size, 64);
    size_t fadt_at = align_up(facs_at + FACS_SIZE, 16);
    size_t madt_at = align_up(fadt_at + FADT_SIZE, 16);
    size_t dsdt_at = align_up(madt_at + madt_size, 16);
    size_t dsdt_size = HEADER_SIZE + (size_t)body;
    size_t total = dsdt_at + dsdt_size;
    if (total > capacity)
        return -ENOSPC;
    memset(buffer, 0, total);

    uint8_t *dsdt = buffer + dsdt_at;
    header(dsdt, "DSDT", (uint32_t)dsdt_size, 2);
    memcpy(dsdt + HEADER_SIZE, dsdt_body, (size_t)body);
    seal(dsdt, (uint32_t)dsdt_size);

    uint8_t *facs = buffer + facs_at;
    memcpy(facs, "FACS", 4);
    store_le32(facs + 4, FACS_SIZE);
    facs[32] = 2; /* version */

    build_fadt(buffer + fadt_at, (uint32_t)(guest_address + facs_at), (uint32_t)(guest_address + dsdt_at));
    build_madt(buffer + madt_at, layout);

    uint8_t *xsdt = buffer + xsdt_at;
    header(xsdt, "XSDT", (uint32_t)xsdt_size, 1);
    store_le64(xsdt + HEADER_SIZE, guest_address + fadt_at);
    store_le64(xsdt + HEADER_SIZE + 8, guest_address + madt_at);
    seal(xsdt, (uint32_t)xsdt_size);

    uint8_t *rsdp = buffer;
    memcpy(rsdp, "RSD PTR ", 8);
    memcpy(rsdp + 9, "LUNAVM", 6);
    rsdp[15] = 2; /* ACPI 2.0+: the XSDT is used */
    store_le32(rsdp + 16, 0);
    store_le32(rsdp + 20, RSDP_SIZE);
    store_le64(rsdp + 24, guest_address + xsdt_at);
    rsdp[8] = checksum(rsdp, 20);
    rsdp[32] = checksum(rsdp, RSDP_SIZE);
    return (long)total;
}
