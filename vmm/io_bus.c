#include "vmm/io_bus.h"

#include <errno.h>
#include <string.h>

int io_bus_register(struct io_bus *bus, uint64_t base, uint64_t length, io_bus_read_fn *read,
                    io_bus_write_fn *write, void *opaque)
{
    if (bus->count == IO_BUS_MAX_RANGES)
        return -ENOSPC;
    for (unsigned i = 0; i < bus->count; i++) {
        const struct io_bus_range *range = &bus->ranges[i];
        if (base < range->base + range->length && range->base < base + length)
            return -EEXIST;
    }
    bus->ranges[bus->count++] = (struct io_bus_range){base, length, read, write, opaque};
    return 0;
}

static const struct io_bus_range *find(const struct io_bus *bus, uint64_t address)
{
    for (unsigned i = 0; i < bus->count; i++)
        if (address >= bus->ranges[i].base && address - bus->ranges[i].base < bus->ranges[i].length)
            return &bus->ranges[i];
    return NULL;
}

void io_bus_read(struct io_bus *bus, uint64_t address, uint8_t *data, unsigned length)
{
    const struct io_bus_range *range = find(bus, address);
    memset(data, 0xff, length);
    if (range && range->read)
        range->read(range->opaque, address - range->base, data, length);
    else if (!range)
        atomic_fetch_add_explicit(&bus->unclaimed, 1, memory_order_relaxed);
}

void io_bus_write(struct io_bus *bus, uint64_t address, const uint8_t *data, unsigned length)
{
    const struct io_bus_range *range = find(bus, address);
    if (range && range->write)
        range->write(range->opaque, address - range->base, data, length);
    else if (!range)
        atomic_fetch_add_explicit(&bus->unclaimed, 1, memory_order_relaxed);
}
