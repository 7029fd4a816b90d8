/*
 * io_bus: which device model answers a port or MMIO access that exits
 * KVM_RUN.
 *
 * Two small tables of address ranges (x86 port space and guest-physical
 * MMIO), filled before the vCPUs start and only read afterwards, so vCPU
 * threads dispatch without a lock.  Accesses nothing claims read as
 * all-ones and writes vanish, as on an empty bus; they are counted, not
 * logged, because guests probe absent hardware in loops.
 */
#ifndef LUNA_VMM_IO_BUS_H
#define LUNA_VMM_IO_BUS_H

#include <stdatomic.h>
#include <stdint.h>

#define IO_BUS_MAX_RANGES 32

/* offset is relative to the range's base; data is length bytes (1, 2, 4 or 8), little-endian. */
typedef void io_bus_read_fn(void *opaque, uint64_t offset, uint8_t *data, unsigned length);
typedef void io_bus_write_fn(void *opaque, uint64_t offset, const uint8_t *data, unsigned length);

struct io_bus_range {
    uint64_t base;
    uint64_t length;
    io_bus_read_fn *read;
    io_bus_write_fn *write;
    void *opaque;
};

struct io_bus {
    struct io_bus_range ranges[IO_BUS_MAX_RANGES];
    unsigned count;
    atomic_uint_fast64_t unclaimed; /* accesses no device answered */
};

/* Claim [base, base + length); read or write may be NULL (reads all-ones, writes ignored).  0, -ENOSPC or -EEXIST. */
int io_bus_register(struct io_bus *bus, uint64_t base, uint64_t length, io_bus_read_fn *read,
                    io_bus_write_fn *write, void *opaque);

void io_bus_read(struct io_bus *bus, uint64_t address, uint8_t *data, unsigned length);
void io_bus_write(struct io_bus *bus, uint64_t address, const uint8_t *data, unsigned length);

#endif
