#include "vmm/guest_memory.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "vmm/memory_layout.h"

int guest_memory_add_region(struct guest_memory *memory, uint64_t guest_address, void *host, uint64_t size)
{
    if (memory->count >= GUEST_MEMORY_MAX_REGIONS)
        return -ENOSPC;
    memory->regions[memory->count++] = (struct guest_memory_region){
        .guest_address = guest_address, .size = size, .host = host};
    memory->ram_size += size;
    return 0;
}

int guest_memory_allocate(struct guest_memory *memory, uint64_t ram_size)
{
    memset(memory, 0, sizeof(*memory));
    /* MAP_NORESERVE: the guest touches what it uses; -m is an upper bound, as with QEMU. */
    void *mapping = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapping == MAP_FAILED)
        return -errno;
    /* Transparent huge pages cut the nested-paging walk; advice only, so failure is harmless. */
    (void)madvise(mapping, ram_size, MADV_HUGEPAGE);
    memory->mapping = mapping;
    memory->mapping_size = ram_size;
    uint64_t low = ram_size < LAYOUT_LOW_RAM_LIMIT ? ram_size : LAYOUT_LOW_RAM_LIMIT;
    guest_memory_add_region(memory, 0, mapping, low);
    if (ram_size > low)
        guest_memory_add_region(memory, LAYOUT_HIGH_RAM_START, (uint8_t *)mapping + low, ram_size - low);
    return 0;
}

int guest_memory_clear(struct guest_memory *memory)
{
    /* A private anonymous mapping: dropped pages come back zero-filled on the next touch. */
    if (memory->mapping && madvise(memory->mapping, memory->mapping_size, MADV_DONTNEED) < 0)
        return -errno;
    return 0;
}

void guest_memory_free(struct guest_memory *memory)
{
    if (memory->mapping)
        munmap(memory->mapping, memory->mapping_size);
    memset(memory, 0, sizeof(*memory));
}

void *guest_memory_translate(const struct guest_memory *memory, uint64_t address, uint64_t length)
{
    for (unsigned i = 0; i < memory->count; i++) {
        const struct guest_memory_region *region = &memory->regions[i];
        /* Written so that no sum can overflow: address and length are the guest's. */
        if (address < region->guest_address)
            continue;
        uint64_t offset = address - region->guest_address;
        if (offset >= region->size && !(offset == region->size && length == 0))
            continue;
        if (length > region->size - offset)
            return NULL;
        return region->host + offset;
    }
    return NULL;
}

uint64_t guest_memory_low_end(const struct guest_memory *memory)
{
    for (unsigned i = 0; i < memory->count; i++)
        if (memory->regions[i].guest_address == 0)
            return memory->regions[i].size;
    return 0;
}
