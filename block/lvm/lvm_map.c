#include "block/lvm/lvm_map.h"

#define SECTOR 512u

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

uint64_t lvm_lv_size(const struct lvm_vg *vg, const struct lvm_lv *lv)
{
    const struct lvm_segment *last = &lv->segments[lv->segment_count - 1];
    return (last->start_extent + last->extent_count) * vg->extent_size * SECTOR;
}

void lvm_map(const struct lvm_vg *vg, const struct lvm_lv *lv, uint64_t offset, uint64_t length,
             struct lvm_piece *out)
{
    uint64_t extent_bytes = vg->extent_size * SECTOR;
    uint64_t extent = offset / extent_bytes;
    /* Segments are few (one per lvextend): a linear search. */
    const struct lvm_segment *segment = lv->segments;
    while (extent >= segment->start_extent + segment->extent_count)
        segment++;
    uint64_t into = offset - segment->start_extent * extent_bytes;
    uint64_t rest = segment->extent_count * extent_bytes - into;
    const struct lvm_stripe *stripe = &segment->stripes[0];
    uint64_t into_area = into;
    if (segment->stripe_count > 1) {
        uint64_t chunk_bytes = segment->stripe_size * SECTOR;
        uint64_t chunk = into / chunk_bytes, within = into % chunk_bytes;
        stripe = &segment->stripes[chunk % segment->stripe_count];
        into_area = chunk / segment->stripe_count * chunk_bytes + within;
        rest = min_u64(rest, chunk_bytes - within);
    }
    const struct lvm_pv *pv = &vg->pvs[stripe->pv];
    *out = (struct lvm_piece){
        .pv = stripe->pv,
        .offset = pv->pe_start * SECTOR + stripe->start_extent * extent_bytes + into_area,
        .length = min_u64(length, rest),
    };
}
