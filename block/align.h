/*
 * align: rounding to a block boundary and recovering a struct from one of
 * its members, shared by the drivers (O_DIRECT alignment, range locks).
 */
#ifndef LUNA_BLOCK_ALIGN_H
#define LUNA_BLOCK_ALIGN_H

#include <stddef.h>
#include <stdint.h>

/* alignment need not be a power of two (O_DIRECT alignments are, block sizes may not be). */
static inline uint64_t align_down(uint64_t value, uint64_t alignment) { return value / alignment * alignment; }

static inline uint64_t align_up(uint64_t value, uint64_t alignment)
{
    return (value + alignment - 1) / alignment * alignment;
}

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

#endif
