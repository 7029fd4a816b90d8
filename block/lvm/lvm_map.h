/*
 * lvm_map: where a byte of a logical volume lives: which PV, at which byte
 * of it, and for how many bytes the mapping continues.  Linear segments map
 * straight onto one PV's extents; striped ones deal stripe_size chunks
 * round-robin over their stripes, as device-mapper's striped target does.
 * The VG must have been checked by lvm_vg_parse and the LV by
 * lvm_lv_check_mappable.
 */
#ifndef LUNA_BLOCK_LVM_LVM_MAP_H
#define LUNA_BLOCK_LVM_LVM_MAP_H

#include <stdint.h>

#include "block/lvm/lvm_metadata.h"

struct lvm_piece {
    unsigned pv;     /* index into vg->pvs */
    uint64_t offset; /* bytes from the start of that PV */
    uint64_t length; /* > 0, at most what was asked */
};

/* The LV's size in bytes. */
uint64_t lvm_lv_size(const struct lvm_vg *vg, const struct lvm_lv *lv);

/* Where [offset, offset + length) begins (offset inside the LV, length > 0). */
void lvm_map(const struct lvm_vg *vg, const struct lvm_lv *lv, uint64_t offset, uint64_t length,
             struct lvm_piece *out);

#endif
