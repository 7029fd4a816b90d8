/*
 * guest_memory: the guest's RAM as the VMM sees it.
 *
 * RAM is one anonymous mapping cut into regions of guest-physical address
 * space (below the 32-bit MMIO hole and above 4 GiB).  Every pointer the
 * device models take from guest-supplied addresses goes through
 * guest_memory_translate, which refuses ranges that do not lie wholly in
 * one region, so a hostile or buggy guest cannot make the VMM touch memory
 * outside its RAM.  Tests build a guest_memory over a plain buffer.
 */
#ifndef LUNA_VMM_GUEST_MEMORY_H
#define LUNA_VMM_GUEST_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#define GUEST_MEMORY_MAX_REGIONS 4

struct guest_memory_region {
    uint64_t guest_address;
    uint64_t size;
    uint8_t *host;
};

struct guest_memory {
    struct guest_memory_region regions[GUEST_MEMORY_MAX_REGIONS];
    unsigned count;
    uint64_t ram_size;  /* sum of the regions */
    void *mapping;      /* what guest_memory_allocate mapped; NULL for borrowed buffers */
    size_t mapping_size;
};

/*
 * Map ram_size bytes (a multiple of 2 MiB, at least 64 MiB checked by the
 * caller) and lay them out around the MMIO hole.  0 or -errno.
 */
int guest_memory_allocate(struct guest_memory *memory, uint64_t ram_size);
void guest_memory_free(struct guest_memory *memory);
/*
 * Let the kernel take back every page of RAM guest_memory_allocate mapped:
 * it reads as zeroes again (a reset).  0 or -errno.
 */
int guest_memory_clear(struct guest_memory *memory);

/* Describe a buffer the caller owns as guest RAM at guest_address (tests).  0 or -ENOSPC. */
int guest_memory_add_region(struct guest_memory *memory, uint64_t guest_address, void *host, uint64_t size);

/* Host pointer for [address, address + length), or NULL if not wholly inside one region. */
void *guest_memory_translate(const struct guest_memory *memory, uint64_t address, uint64_t length);

/* End of the RAM that starts at address 0 (where boot structures, kernel and initrd go). */
uint64_t guest_memory_low_end(const struct guest_memory *memory);

#endif
