#include "vmm/mptable.h"

#include <errno.h>
#include <string.h>

#include "vmm/memory_layout.h"
#include "common/byte_order.h"

#define FLOATING_POINTER_SIZE 16u
#define HEADER_SIZE 44u
#define PROCESSOR_ENTRY_SIZE 20u
#define SMALL_ENTRY_SIZE 8u
#define LOCAL_INTERRUPT_COUNT 2u

enum mp_entry_type {
    MP_ENTRY_PROCESSOR = 0,
    MP_ENTRY_BUS = 1,
    MP_ENTRY_IOAPIC = 2,
    MP_ENTRY_IO_INTERRUPT = 3,
    MP_ENTRY_LOCAL_INTERRUPT = 4,
};

enum mp_interrupt_type { MP_INTERRUPT_INT = 0, MP_INTERRUPT_NMI = 1, MP_INTERRUPT_EXTINT = 3 };

#define MP_SPEC_REVISION 4         /* 1.4 */
#define MP_LOCAL_APIC_VERSION 0x14
#define MP_IOAPIC_VERSION 0x11
#define MP_CPU_ENABLED 0x01
#define MP_CPU_BOOTSTRAP 0x02
#define MP_CPU_SIGNATURE 0x600     /* family 6: only informative, Linux reads CPUID */
#define MP_CPU_FEATURES 0x201      /* FPU and APIC */
#define MP_ALL_LOCAL_APICS 0xff

static uint8_t checksum(const uint8_t *bytes, size_t length)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < length; i++)
        sum = (uint8_t)(sum + bytes[i]);
    return (uint8_t)(0 - sum);
}

size_t mptable_size(unsigned cpus)
{
    return FLOATING_POINTER_SIZE + HEADER_SIZE + (size_t)cpus * PROCESSOR_ENTRY_SIZE +
           SMALL_ENTRY_SIZE * (2 + MPTABLE_IOAPIC_PINS + LOCAL_INTERRUPT_COUNT);
}

unsigned mptable_ioapic_id(unsigned cpus)
{
    return cpus;
}

static uint8_t *put_io_interrupt(uint8_t *p, enum mp_interrupt_type type, uint8_t bus_irq, uint8_t ioapic,
                                 uint8_t pin)
{
    p[0] = MP_ENTRY_IO_INTERRUPT;
    p[1] = (uint8_t)type;
    store_le16(p + 2, 0); /* polarity and trigger "conform to the bus": ISA is edge, active high */
    p[4] = 0;             /* source bus: the ISA bus */
    p[5] = bus_irq;
    p[6] = ioapic;
    p[7] = pin;
    return p + SMALL_ENTRY_SIZE;
}

static uint8_t *put_local_interrupt(uint8_t *p, enum mp_interrupt_type type, uint8_t lint)
{
    p[0] = MP_ENTRY_LOCAL_INTERRUPT;
    p[1] = (uint8_t)type;
    store_le16(p + 2, 0);
    p[4] = 0;
    p[5] = 0;
    p[6] = MP_ALL_LOCAL_APICS;
    p[7] = lint;
    return p + SMALL_ENTRY_SIZE;
}

long mptable_build(uint8_t *buffer, size_t capacity, uint32_t guest_address, unsigned cpus)
{
    if (cpus == 0 || cpus > MPTABLE_MAX_CPUS)
        return -EINVAL;
    size_t size = mptable_size(cpus);
    if (capacity < size)
        return -ENOSPC;
    memset(buffer, 0, size);

    uint8_t *header = buffer + FLOATING_POINTER_SIZE;
    uint8_t *p = header + HEADER_SIZE;
    for (unsigned cpu = 0; cpu < cpus; cpu++) {
        p[0] = MP_ENTRY_PROCESSOR;
        p[1] = (uint8_t)cpu; /* local APIC id: vcpu.c sets the same in CPUID */
        p[2] = MP_LOCAL_APIC_VERSION;
        p[3] = MP_CPU_ENABLED | (cpu == 0 ? MP_CPU_BOOTSTRAP : 0);
        store_le32(p + 4, MP_CPU_SIGNATURE);
        store_le32(p + 8, MP_CPU_FEATURES);
        p += PROCESSOR_ENTRY_SIZE;
    }
    p[0] = MP_ENTRY_BUS;
    p[1] = 0;
    memcpy(p + 2, "ISA   ", 6);
    p += SMALL_ENTRY_SIZE;

    uint8_t ioapic = (uint8_t)mptable_ioapic_id(cpus);
    p[0] = MP_ENTRY_IOAPIC;
    p[1] = ioapic;
    p[2] = MP_IOAPIC_VERSION;
    p[3] = 1; /* enabled */
    store_le32(p + 4, LAYOUT_IOAPIC_ADDRESS);
    p += SMALL_ENTRY_SIZE;

    for (unsigned pin = 0; pin < MPTABLE_IOAPIC_PINS; pin++)
        p = put_io_interrupt(p, MP_INTERRUPT_INT, (uint8_t)pin, ioapic, (uint8_t)pin);
    p = put_local_interrupt(p, MP_INTERRUPT_EXTINT, 0);
    p = put_local_interrupt(p, MP_INTERRUPT_NMI, 1);

    size_t table_length = (size_t)(p - header);
    memcpy(header, "PCMP", 4);
    store_le16(header + 4, (uint16_t)table_length);
    header[6] = MP_SPEC_REVISION;
    memcpy(header + 8, "LUNAVM  ", 8);
    memcpy(header + 16, "LUNAVM 0.1  ", 12);
    store_le16(header + 34, (uint16_t)(cpus + 2 + MPTABLE_IOAPIC_PINS + LOCAL_INTERRUPT_COUNT));
    store_le32(header + 36, LAYOUT_LOCAL_APIC_ADDRESS);
    header[7] = checksum(header, table_length);

    memcpy(buffer, "_MP_", 4);
    store_le32(buffer + 4, guest_address + FLOATING_POINTER_SIZE);
    buffer[8] = 1; /* length in 16-byte units */
    buffer[9] = MP_SPEC_REVISION;
    /* feature byte 1 = 0: a configuration table follows, no default configuration */
    buffer[10] = checksum(buffer, FLOATING_POINTER_SIZE);
    return (long)size;
}
