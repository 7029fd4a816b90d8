/* The MP table: signatures, checksums, entries. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "common/byte_order.h"
#include "vmm/memory_layout.h"
#include "vmm/mptable.h"

static uint8_t sum(const uint8_t *bytes, size_t length)
{
    uint8_t total = 0;
    for (size_t i = 0; i < length; i++)
        total = (uint8_t)(total + bytes[i]);
    return total;
}

Test(vmm_mptable, four_cpus)
{
    static uint8_t buffer[4096];
    const uint32_t at = 0xf0000;
    long size = mptable_build(buffer, sizeof(buffer), at, 4);
    cr_assert_eq(size, (long)mptable_size(4));

    cr_assert_eq(memcmp(buffer, "_MP_", 4), 0);
    cr_assert_eq(load_le32(buffer + 4), at + 16, "config table right after the floating pointer");
    cr_assert_eq(buffer[8], 1);
    cr_assert_eq(buffer[9], 4);
    cr_assert_eq(sum(buffer, 16), 0, "floating pointer checksum");

    const uint8_t *header = buffer + 16;
    cr_assert_eq(memcmp(header, "PCMP", 4), 0);
    uint16_t length = load_le16(header + 4);
    cr_assert_eq(length, size - 16);
    cr_assert_eq(sum(header, length), 0, "configuration table checksum");
    cr_assert_eq(load_le32(header + 36), LAYOUT_LOCAL_APIC_ADDRESS);
    uint16_t entries = load_le16(header + 34);
    cr_assert_eq(entries, 4 + 1 + 1 + MPTABLE_IOAPIC_PINS + 2);

    const uint8_t *p = header + 44;
    unsigned processors = 0, buses = 0, ioapics = 0, interrupts = 0, locals = 0;
    for (unsigned i = 0; i < entries; i++) {
        switch (p[0]) {
        case 0:
            cr_assert_eq(p[1], processors, "APIC id = vCPU index");
            cr_assert(p[3] & 1, "enabled");
            cr_assert_eq(!!(p[3] & 2), processors == 0, "only CPU 0 is the bootstrap processor");
            processors++;
            p += 20;
            break;
        case 1:
            cr_assert_eq(memcmp(p + 2, "ISA   ", 6), 0);
            buses++;
            p += 8;
            break;
        case 2:
            cr_assert_eq(p[1], mptable_ioapic_id(4));
            cr_assert_eq(load_le32(p + 4), LAYOUT_IOAPIC_ADDRESS);
            ioapics++;
            p += 8;
            break;
        case 3:
            cr_assert_eq(p[5], interrupts, "ISA IRQ n");
            cr_assert_eq(p[7], interrupts, "on pin n");
            cr_assert_eq(p[6], mptable_ioapic_id(4));
            interrupts++;
            p += 8;
            break;
        case 4:
            cr_assert_eq(p[7], locals, "LINT0 then LINT1");
            cr_assert_eq(p[1], locals == 0 ? 3 : 1, "ExtINT then NMI");
            locals++;
            p += 8;
            break;
        default:
            cr_assert_fail("unknown entry type %u", p[0]);
        }
    }
    cr_assert_eq(processors, 4);
    cr_assert_eq(buses, 1);
    cr_assert_eq(ioapics, 1);
    cr_assert_eq(interrupts, MPTABLE_IOAPIC_PINS);
    cr_assert_eq(locals, 2);
    cr_assert_eq(p, buffer + size);
}

Test(vmm_mptable, limits)
{
    static uint8_t buffer[65536];
    cr_assert_eq(mptable_build(buffer, sizeof(buffer), 0xf0000, 0), -EINVAL);
    cr_assert_eq(mptable_build(buffer, sizeof(buffer), 0xf0000, MPTABLE_MAX_CPUS + 1), -EINVAL);
    cr_assert_eq(mptable_build(buffer, 100, 0xf0000, 1), -ENOSPC);
    long size = mptable_build(buffer, sizeof(buffer), 0xf0000, MPTABLE_MAX_CPUS);
    cr_assert_gt(size, 0);
    cr_assert_eq(sum(buffer + 16, load_le16(buffer + 16 + 4)), 0);
    cr_assert_leq((size_t)size, LAYOUT_BIOS_AREA_END - LAYOUT_MPTABLE_ADDRESS);
}
