/*
 * lvm_metadata: a volume group as LVM2's text metadata describes it: its
 * extent size and sequence number, its physical volumes (by UUID, with the
 * sector where their extents start) and its logical volumes as segments of
 * extents mapped onto PV extents.  Pure over a byte buffer; every number is
 * checked so that mapping an LV (lvm_map.h) cannot overflow or leave its
 * PVs' extent areas.
 */
#ifndef LUNA_BLOCK_LVM_LVM_METADATA_H
#define LUNA_BLOCK_LVM_LVM_METADATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LVM_UUID_LENGTH 32 /* without the dashes lvm prints */

struct lvm_pv {
    char *name;                        /* "pv0": how segments refer to it */
    char uuid[LVM_UUID_LENGTH + 1];
    uint64_t pe_start;                 /* sectors */
    uint64_t pe_count;
};

struct lvm_stripe {
    unsigned pv; /* index into vg->pvs */
    uint64_t start_extent;
};

struct lvm_segment {
    uint64_t start_extent; /* in the LV */
    uint64_t extent_count;
    char *type;            /* "striped" for linear and striped; others are not mapped */
    uint32_t stripe_count;
    uint64_t stripe_size;  /* sectors; 0 with one stripe */
    struct lvm_stripe *stripes;
};

struct lvm_lv {
    char *name;
    bool writable;  /* status has WRITE */
    bool in_snapshot; /* a snapshot's origin or store: writing it here would bypass the snapshot */
    uint32_t segment_count;
    struct lvm_segment *segments;
};

struct lvm_vg {
    char *name;
    uint64_t seqno;
    uint64_t extent_size; /* sectors */
    unsigned pv_count;
    struct lvm_pv *pvs;
    unsigned lv_count;
    struct lvm_lv *lvs;
};

/* Parse metadata text.  0, or -EINVAL / -ENOMEM with a message naming the line or the value. */
int lvm_vg_parse(const char *text, size_t length, struct lvm_vg *vg, char **error_message);

void lvm_vg_clear(struct lvm_vg *vg);

const struct lvm_lv *lvm_vg_find_lv(const struct lvm_vg *vg, const char *name);

/*
 * Whether an LV can be mapped (every segment "striped"); otherwise a
 * message naming the segment type (thin, raid, mirror, snapshot...).
 */
int lvm_lv_check_mappable(const struct lvm_vg *vg, const struct lvm_lv *lv, char **error_message);

/* Whether two descriptions of an LV map every extent to the same place. */
bool lvm_lv_same_mapping(const struct lvm_vg *a, const struct lvm_lv *lv_a, const struct lvm_vg *b,
                         const struct lvm_lv *lv_b);

#endif
