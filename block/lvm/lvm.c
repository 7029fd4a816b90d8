#include "block/lvm/lvm.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "block/aio_internal.h"
#include "block/file_io.h"
#include "block/iov.h"
#include "block/lvm/lvm_label.h"
#include "block/lvm/lvm_map.h"
#include "block/lvm/lvm_metadata.h"
#include "block/pool_submit.h"
#include "common/error_message.h"

#define MAX_DEVICES 64

const char *lvm_mapper_directory = "/dev/mapper";

struct lvm_device {
    struct bdev *bdev;
    struct lvm_pv_label label;
};

struct lvm_volume {
    char *vg_name, *lv_name;
    unsigned device_count;
    struct lvm_device devices[MAX_DEVICES];
    struct lvm_vg vg;         /* as read at open (and re-read while the mapping stays the same) */
    const struct lvm_lv *lv;  /* in vg */
    struct bdev **pv_bdevs;   /* per vg->pvs[i]: its device's bdev */
    atomic_bool stale;        /* the LV's mapping changed under us: no more writes */
    pthread_mutex_t reread_lock;
};

/* ---- device-mapper ---- */

/* dm's name for VG/LV: the two names joined by '-', each '-' inside them doubled. */
static void mapper_name(char *out, size_t size, const char *vg, const char *lv)
{
    size_t used = 0;
    const char *parts[2] = {vg, lv};
    for (int part = 0; part < 2; part++) {
        if (part == 1 && used + 1 < size)
            out[used++] = '-';
        for (const char *c = parts[part]; *c && used + 2 < size; c++) {
            if (*c == '-')
                out[used++] = '-';
            out[used++] = *c;
        }
    }
    out[used < size ? used : size - 1] = '\0';
}

bool lvm_device_mapper_active(const char *mapper_directory, const char *vg, const char *lv)
{
    char name[1024], path[2048];
    mapper_name(name, sizeof(name), vg, lv);
    snprintf(path, sizeof(path), "%s/%s", mapper_directory, name);
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- reading the VG from the devices ---- */

static int device_read(void *opaque, void *buffer, size_t length, uint64_t offset)
{
    struct bdev *bdev = opaque;
    if (offset > bdev->size || length > bdev->size - offset)
        return -EINVAL;
    return bdev_pread(bdev, buffer, length, offset);
}

/*
 * The newest description of vg_name among the devices' metadata areas
 * (the highest seqno: lvm updates every copy, a crash may leave some behind).
 */
static int vg_read(struct lvm_volume *volume, struct lvm_vg *out, char **error_message)
{
    bool found = false;
    int rc = 0;
    for (unsigned d = 0; d < volume->device_count; d++) {
        struct lvm_device *device = &volume->devices[d];
        for (unsigned a = 0; a < device->label.metadata_area_count; a++) {
            char *text = NULL, *reason = NULL;
            size_t length;
            rc = lvm_metadata_area_read(device_read, device->bdev, device->bdev->size,
                                        &device->label.metadata_areas[a], &text, &length, &reason);
            struct lvm_vg vg;
            if (rc == 0)
                rc = lvm_vg_parse(text, length, &vg, &reason);
            free(text);
            if (rc == -ENOENT) {
                free(reason);
                rc = 0;
                continue;
            }
            if (rc < 0) {
                error_message_set(error_message, rc, "%s: %s", device->bdev->filename, reason ? reason : "?");
                free(reason);
                if (found)
                    lvm_vg_clear(out);
                return rc;
            }
            if (strcmp(vg.name, volume->vg_name) != 0 || (found && vg.seqno <= out->seqno)) {
                lvm_vg_clear(&vg);
                continue;
            }
            if (found)
                lvm_vg_clear(out);
            *out = vg;
            found = true;
        }
    }
    if (!found)
        return error_message_set(error_message, -ENOENT, "no metadata of volume group %s on the lvm_devices",
                                 volume->vg_name);
    return 0;
}

/* Pair every PV of the VG with the device whose label carries its UUID. */
static int pvs_resolve(struct lvm_volume *volume, char **error_message)
{
    const struct lvm_vg *vg = &volume->vg;
    volume->pv_bdevs = calloc(vg->pv_count ? vg->pv_count : 1, sizeof(*volume->pv_bdevs));
    if (!volume->pv_bdevs)
        return error_message_set(error_message, -ENOMEM, "out of memory");
    for (unsigned p = 0; p < vg->pv_count; p++)
        for (unsigned d = 0; d < volume->device_count; d++)
            if (strcmp(vg->pvs[p].uuid, volume->devices[d].label.uuid) == 0)
                volume->pv_bdevs[p] = volume->devices[d].bdev;
    /* Only the PVs the LV uses must be there. */
    const struct lvm_lv *lv = volume->lv;
    for (uint32_t s = 0; s < lv->segment_count; s++) {
        for (uint32_t i = 0; i < lv->segments[s].stripe_count; i++) {
            const struct lvm_pv *pv = &vg->pvs[lv->segments[s].stripes[i].pv];
            struct bdev *bdev = volume->pv_bdevs[lv->segments[s].stripes[i].pv];
            if (!bdev)
                return error_message_set(error_message, -ENOENT,
                                         "%s/%s needs physical volume %s (uuid %s), which is not among the "
                                         "lvm_devices",
                                         vg->name, lv->name, pv->name, pv->uuid);
            uint64_t end = (pv->pe_start + pv->pe_count * vg->extent_size) * 512;
            if (end > bdev->size)
                return error_message_set(error_message, -EINVAL,
                                         "%s: physical volume %s ends at byte %llu but the device has %llu",
                                         bdev->filename, pv->name, (unsigned long long)end,
                                         (unsigned long long)bdev->size);
        }
    }
    return 0;
}

static int devices_open(struct lvm_volume *volume, const struct bdev_options *options, char **error_message)
{
    char *list = strdup(options->lvm_devices);
    if (!list)
        return error_message_set(error_message, -ENOMEM, "out of memory");
    int rc = 0;
    char *save = NULL;
    for (char *path = strtok_r(list, ":", &save); path && rc == 0; path = strtok_r(NULL, ":", &save)) {
        if (volume->device_count == MAX_DEVICES) {
            rc = error_message_set(error_message, -E2BIG, "more than %d lvm_devices", MAX_DEVICES);
            break;
        }
        struct bdev_options device_options = *options;
        device_options.path = path;
        device_options.format = BDEV_FORMAT_AUTO;
        device_options.create_size_set = false;
        device_options.backing = NULL;
        device_options.lvm_devices = NULL;
        struct lvm_device *device = &volume->devices[volume->device_count];
        rc = bdev_open(&device_options, &device->bdev, error_message);
        if (rc < 0)
            break;
        volume->device_count++;
        char *reason = NULL;
        rc = lvm_label_read(device_read, device->bdev, device->bdev->size, &device->label, &reason);
        if (rc == -ENOENT)
            rc = 0; /* not a PV: lvm's scan skips such devices too */
        else if (rc < 0)
            error_message_set(error_message, rc, "%s: %s", path, reason ? reason : "cannot read the LVM label");
        free(reason);
    }
    free(list);
    return rc;
}

/* ---- requests ---- */

/* A request inside one PV piece, passed to that PV's bdev (an aio record). */
struct lvm_request {
    struct bdev_io child;
    struct bdev_io *parent;
};

_Static_assert(sizeof(struct lvm_request) <= AIO_RECORD_SIZE, "lvm_request must fit an aio record");

static bool is_write(enum bdev_op op)
{
    return op == BDEV_OP_WRITE || op == BDEV_OP_DISCARD || op == BDEV_OP_WRITE_ZEROES;
}

static void child_done(struct bdev_io *child)
{
    struct lvm_request *request = child->opaque;
    struct bdev_io *parent = request->parent;
    int result = child->result;
    parent->nr_extents = child->nr_extents;
    aio_record_put(parent->ctx, request);
    aio_request_finish(parent, result);
}

static void lvm_submit(struct bdev *bdev, struct bdev_io *io)
{
    struct lvm_volume *volume = bdev->driver;
    if (is_write(io->op) && atomic_load(&volume->stale)) {
        aio_context_complete(io->ctx, io, -EIO);
        return;
    }
    struct lvm_piece piece;
    if (io->op != BDEV_OP_FLUSH) {
        lvm_map(&volume->vg, volume->lv, io->offset, io->length, &piece);
        if (piece.length == io->length) {
            struct lvm_request *request = aio_record_get(io->ctx);
            if (request) {
                request->parent = io;
                request->child = (struct bdev_io){.op = io->op,
                                                  .flags = io->flags,
                                                  .offset = piece.offset,
                                                  .length = io->length,
                                                  .iov = io->iov,
                                                  .iovcnt = io->iovcnt,
                                                  .extents = io->extents,
                                                  .max_extents = io->max_extents,
                                                  .ctx = io->ctx,
                                                  .complete = child_done,
                                                  .opaque = request};
                bdev_submit(volume->pv_bdevs[piece.pv], &request->child);
                return;
            }
        }
    }
    pool_submit(bdev, io); /* flushes, requests across pieces */
}

/* Re-read the metadata; a changed mapping of our LV stops every later write. */
static void mapping_recheck(struct lvm_volume *volume)
{
    pthread_mutex_lock(&volume->reread_lock);
    struct lvm_vg now;
    if (!atomic_load(&volume->stale) && vg_read(volume, &now, NULL) == 0) {
        if (now.seqno != volume->vg.seqno) {
            const struct lvm_lv *lv = lvm_vg_find_lv(&now, volume->lv_name);
            if (!lv || !lvm_lv_same_mapping(&volume->vg, volume->lv, &now, lv))
                atomic_store(&volume->stale, true);
            else
                volume->vg.seqno = now.seqno; /* another LV changed: ours is where it was */
        }
        lvm_vg_clear(&now);
    }
    pthread_mutex_unlock(&volume->reread_lock);
}

static int flush_all(struct lvm_volume *volume)
{
    int result = 0;
    for (unsigned d = 0; d < volume->device_count; d++) {
        int rc = bdev_flush_blocking(volume->devices[d].bdev);
        if (rc < 0 && result == 0)
            result = rc;
    }
    mapping_recheck(volume);
    return result;
}

static int piece_io(struct lvm_volume *volume, struct bdev_io *io, const struct lvm_piece *piece, uint64_t done,
                    struct iovec *slice)
{
    struct bdev_io child = {.op = io->op, .flags = io->flags, .offset = piece->offset, .length = piece->length};
    if (io->op == BDEV_OP_READ || io->op == BDEV_OP_WRITE) {
        child.iov = slice;
        child.iovcnt = iov_slice(io->iov, io->iovcnt, done, piece->length, slice);
    }
    return bdev_blocking(volume->pv_bdevs[piece->pv], &child);
}

static int block_status_pieces(struct lvm_volume *volume, struct bdev_io *io)
{
    uint64_t done = 0;
    uint32_t count = 0;
    while (done < io->length && count < io->max_extents) {
        struct lvm_piece piece;
        lvm_map(&volume->vg, volume->lv, io->offset + done, io->length - done, &piece);
        struct bdev_extent extent;
        struct bdev_io child = {.op = BDEV_OP_BLOCK_STATUS, .offset = piece.offset, .length = piece.length,
                                .extents = &extent, .max_extents = 1};
        int rc = bdev_blocking(volume->pv_bdevs[piece.pv], &child);
        if (rc < 0)
            return rc;
        if (count > 0 && io->extents[count - 1].flags == extent.flags)
            io->extents[count - 1].length += extent.length;
        else
            io->extents[count++] = extent;
        done += extent.length;
    }
    io->nr_extents = count;
    return 0;
}

static int lvm_blocking(struct bdev *bdev, struct bdev_io *io)
{
    struct lvm_volume *volume = bdev->driver;
    if (io->op == BDEV_OP_FLUSH)
        return flush_all(volume);
    if (is_write(io->op) && atomic_load(&volume->stale))
        return -EIO;
    if (io->op == BDEV_OP_BLOCK_STATUS)
        return block_status_pieces(volume, io);
    struct iovec *slice = NULL;
    if (io->op == BDEV_OP_READ || io->op == BDEV_OP_WRITE) {
        slice = malloc(sizeof(*slice) * (size_t)io->iovcnt);
        if (!slice)
            return -ENOMEM;
    }
    int rc = 0;
    for (uint64_t done = 0; done < io->length && rc == 0;) {
        struct lvm_piece piece;
        lvm_map(&volume->vg, volume->lv, io->offset + done, io->length - done, &piece);
        rc = piece_io(volume, io, &piece, done, slice);
        done += piece.length;
    }
    free(slice);
    return rc;
}

/* ---- open and close ---- */

static void volume_free(struct lvm_volume *volume)
{
    for (unsigned d = 0; d < volume->device_count; d++)
        bdev_close(volume->devices[d].bdev);
    lvm_vg_clear(&volume->vg);
    free(volume->pv_bdevs);
    free(volume->vg_name);
    free(volume->lv_name);
    pthread_mutex_destroy(&volume->reread_lock);
    free(volume);
}

static void lvm_close(struct bdev *bdev) { volume_free(bdev->driver); }

static const struct bdev_ops lvm_ops = {
    .name = "lvm",
    .submit = lvm_submit,
    .blocking = lvm_blocking,
    .close = lvm_close,
};

/* Capabilities and limits every PV the LV uses can honour. */
static void caps_and_limits(struct bdev *bdev, struct lvm_volume *volume, bool readonly)
{
    const uint32_t shared = BDEV_CAP_DISCARD | BDEV_CAP_DISCARD_ZEROES | BDEV_CAP_WRITE_ZEROES | BDEV_CAP_FAST_ZERO |
                            BDEV_CAP_BLOCK_STATUS | BDEV_CAP_FUA | BDEV_CAP_ZERO_INIT;
    uint32_t caps = shared;
    struct bdev_limits limits = {.request_alignment = 1, .logical_block_size = 512, .physical_block_size = 512,
                                 .max_transfer = UINT32_MAX, .max_discard = UINT64_MAX};
    for (unsigned d = 0; d < volume->device_count; d++) {
        const struct bdev *pv = volume->devices[d].bdev;
        caps = (caps & (pv->caps | ~shared)) | (pv->caps & BDEV_CAP_FLUSH);
        if (pv->limits.request_alignment > limits.request_alignment)
            limits.request_alignment = pv->limits.request_alignment;
        if (pv->limits.logical_block_size > limits.logical_block_size)
            limits.logical_block_size = pv->limits.logical_block_size;
        if (pv->limits.physical_block_size > limits.physical_block_size)
            limits.physical_block_size = pv->limits.physical_block_size;
        if (pv->limits.max_transfer < limits.max_transfer)
            limits.max_transfer = pv->limits.max_transfer;
        if (pv->limits.max_discard < limits.max_discard)
            limits.max_discard = pv->limits.max_discard;
    }
    /* What an initiator should send at once: a stripe row, when striped. */
    const struct lvm_segment *first = &volume->lv->segments[0];
    limits.optimal_io_size = first->stripe_count > 1 ? (uint32_t)(first->stripe_size * 512 * first->stripe_count) : 0;
    bdev->caps = caps | (readonly ? BDEV_CAP_READ_ONLY : 0);
    bdev->limits = limits;
}

/* "VG/LV" into its two names. */
static int split_name(const char *path, char **vg, char **lv, char **error_message)
{
    const char *slash = strchr(path, '/');
    if (!slash || slash == path || !slash[1] || strchr(slash + 1, '/'))
        return error_message_set(error_message, -EINVAL, "%s: an LVM volume is named VG/LV", path);
    *vg = strndup(path, (size_t)(slash - path));
    *lv = strdup(slash + 1);
    if (!*vg || !*lv)
        return error_message_set(error_message, -ENOMEM, "out of memory");
    return 0;
}

/* No lvm_devices: the LV device-mapper has active, as a host device. */
static int open_active(struct bdev *bdev, const struct bdev_options *options, const char *vg, const char *lv,
                       char **error_message)
{
    char path[2048];
    snprintf(path, sizeof(path), "/dev/%s/%s", vg, lv);
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISBLK(st.st_mode))
        return error_message_set(error_message, -ENOENT,
                                 "%s/%s is not active in device-mapper (no %s): give lvm_devices to read the "
                                 "volume group from its physical volumes",
                                 vg, lv, path);
    char *filename = strdup(path);
    if (!filename)
        return error_message_set(error_message, -ENOMEM, "out of memory");
    free(bdev->filename);
    bdev->filename = filename;
    struct bdev_options device_options = *options;
    device_options.path = path;
    device_options.format = BDEV_FORMAT_HOST_DEVICE;
    return host_device_open(bdev, &device_options, error_message);
}

int lvm_open(struct bdev *bdev, const struct bdev_options *options, char **error_message)
{
    char *vg_name = NULL, *lv_name = NULL;
    int rc = split_name(options->path, &vg_name, &lv_name, error_message);
    if (rc == 0 && !options->lvm_devices)
        rc = open_active(bdev, options, vg_name, lv_name, error_message);
    if (rc < 0 || !options->lvm_devices) {
        free(vg_name);
        free(lv_name);
        return rc;
    }
    struct lvm_volume *volume = calloc(1, sizeof(*volume));
    if (!volume) {
        free(vg_name);
        free(lv_name);
        return error_message_set(error_message, -ENOMEM, "out of memory");
    }
    pthread_mutex_init(&volume->reread_lock, NULL);
    volume->vg_name = vg_name;
    volume->lv_name = lv_name;
    rc = devices_open(volume, options, error_message);
    if (rc == 0)
        rc = vg_read(volume, &volume->vg, error_message);
    if (rc == 0) {
        volume->lv = lvm_vg_find_lv(&volume->vg, lv_name);
        if (!volume->lv)
            rc = error_message_set(error_message, -ENOENT, "volume group %s has no logical volume %s", vg_name,
                                   lv_name);
    }
    if (rc == 0)
        rc = lvm_lv_check_mappable(&volume->vg, volume->lv, error_message);
    if (rc == 0)
        rc = pvs_resolve(volume, error_message);
    bool active = rc == 0 && lvm_device_mapper_active(lvm_mapper_directory, vg_name, lv_name);
    if (active && !options->readonly)
        rc = error_message_set(error_message, -EBUSY,
                               "%s/%s is active in device-mapper: writing it through lvm_devices would go around "
                               "the kernel's mapping (serve /dev/%s/%s without lvm_devices, or read-only)",
                               vg_name, lv_name, vg_name, lv_name);
    if (rc < 0) {
        volume_free(volume);
        return rc;
    }
    bool readonly = options->readonly;
    if (!readonly && (!volume->lv->writable || volume->lv->in_snapshot)) {
        readonly = true;
        if (asprintf(&bdev->notice, "opened read-only: lvm marks %s/%s %s", vg_name, lv_name,
                     volume->lv->in_snapshot ? "as part of a snapshot" : "read-only") < 0)
            bdev->notice = NULL;
    }
    bdev->ops = &lvm_ops;
    bdev->driver = volume;
    bdev->size = lvm_lv_size(&volume->vg, volume->lv);
    caps_and_limits(bdev, volume, readonly);
    return 0;
}
