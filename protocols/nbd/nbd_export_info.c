/*
 * What an export looks like to an NBD client: transmission flags and size
 * constraints, derived from the bdev's capabilities so that nothing the
 * disk cannot do is ever advertised.
 */
#include "block/export.h"
#include "protocols/nbd/nbd_internal.h"

uint16_t nbd_export_transmission_flags(const struct export *export, bool chunks)
{
    const struct bdev *bdev = export->bdev;
    /*
     * FLUSH and FUA are always honoured (the bdev contract defines both);
     * CACHE is advisory and always succeeds; one bdev is shared by every
     * connection of an export, so multi-conn is safe, except on an
     * ephemeral overlay: each connection gets its own.
     */
    uint16_t flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;
    bool private_view = export->private_view || export->config.overlay == EXPORT_OVERLAY_EPHEMERAL;
    if (!private_view)
        flags |= NBD_FLAG_CAN_MULTI_CONN;
    if (export->config.overlay != EXPORT_OVERLAY_NONE) {
        /* The base of overlays (NBD_OPT_INFO): what a client's qcow2 overlay will offer. */
        flags |= NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
        if (export->config.bdev.discard)
            flags |= NBD_FLAG_SEND_TRIM;
    } else if (export->readonly) {
        flags |= NBD_FLAG_READ_ONLY;
    } else {
        if (bdev->caps & BDEV_CAP_DISCARD)
            flags |= NBD_FLAG_SEND_TRIM;
        if (bdev->caps & BDEV_CAP_WRITE_ZEROES)
            flags |= NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    }
    if (chunks)
        flags |= NBD_FLAG_SEND_DF;
    return flags;
}

static uint32_t power_of_two_at_least(uint32_t value)
{
    uint32_t power = 1;
    while (power < value && power < (1u << 31))
        power <<= 1;
    return power;
}

void nbd_export_block_sizes(const struct export *export, uint32_t max_payload, uint32_t sizes[3])
{
    const struct bdev_limits *limits = &export->bdev->limits;
    uint32_t minimum = power_of_two_at_least(limits->request_alignment ? limits->request_alignment : 1);
    if (minimum > 65536) /* the spec's ceiling; the bdev bounces anything smaller */
        minimum = 65536;
    uint32_t preferred = power_of_two_at_least(limits->physical_block_size);
    if (preferred < 4096)
        preferred = 4096;
    if (preferred < minimum)
        preferred = minimum;
    uint32_t maximum = max_payload;
    if (limits->max_transfer && limits->max_transfer < maximum)
        maximum = limits->max_transfer;
    if (maximum < preferred)
        maximum = preferred;
    sizes[0] = minimum;
    sizes[1] = preferred;
    sizes[2] = maximum;
}
