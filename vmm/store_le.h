/*
 * store_le: little-endian stores into byte buffers, the counterpart of
 * common/byte_order.h's load_le* for the guest structures lunavm builds
 * (zero page, MP table, virtio rings): written byte-exact, never cast.
 */
#ifndef LUNA_VMM_STORE_LE_H
#define LUNA_VMM_STORE_LE_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

static inline void store_le16(uint8_t *p, uint16_t v)
{
    v = htole16(v);
    memcpy(p, &v, sizeof(v));
}

static inline void store_le32(uint8_t *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, sizeof(v));
}

static inline void store_le64(uint8_t *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, sizeof(v));
}

#endif
