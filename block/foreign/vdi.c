/*
 * vdi: VirtualBox's image, version 1.1.  A header at the start, then a
 * block map of 32-bit entries (one per 1 MiB block: the index of the
 * block's place in the data area, or unallocated / discarded), then the
 * data blocks.  Static images have every block allocated in order.
 * Differencing images (a parent UUID) are refused.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/byte_order.h"
#include "block/foreign/foreign.h"
#include "block/foreign/mapped_image.h"
#include "common/error_message.h"

#define SECTOR 512u
#define HEADER_SIZE 512u
#define SIGNATURE 0xbeda107fu
#define VERSION_1_1 0x00010001u
#define BLOCK_SIZE (1u << 20) /* the only one qemu-img and VirtualBox use */
#define BLOCK_UNALLOCATED 0xffffffffu
#define BLOCK_DISCARDED 0xfffffffeu
#define MAX_BLOCKS 0x3fffffffu
#define MAX_DISK_SIZE ((uint64_t)MAX_BLOCKS * BLOCK_SIZE)

/* Header field offsets. */
enum {
    SIGNATURE_AT = 0x40,
    VERSION_AT = 0x44,
    BLOCK_MAP_OFFSET_AT = 0x154,
    DATA_OFFSET_AT = 0x158,
    SECTOR_SIZE_AT = 0x168,
    DISK_SIZE_AT = 0x170,
    BLOCK_SIZE_AT = 0x178,
    BLOCKS_IN_IMAGE_AT = 0x180,
    UUID_LINK_AT = 0x1a8,
    UUID_PARENT_AT = 0x1b8,
    UUID_SIZE = 16,
};

struct vdi {
    uint64_t data_offset;
    uint32_t blocks;
    uint32_t *block_map;
};

bool vdi_probe(const uint8_t *start, size_t length)
{
    return length >= HEADER_SIZE && load_le32(start + SIGNATURE_AT) == SIGNATURE;
}

static bool is_null_uuid(const uint8_t *uuid)
{
    static const uint8_t null_uuid[UUID_SIZE];
    return !memcmp(uuid, null_uuid, UUID_SIZE);
}

/* qemu-img's checks in qemu-img's order, with its messages. */
static int header_check(const uint8_t *h, uint64_t disk_size, const char *path, char **error_message)
{
    uint32_t version = load_le32(h + VERSION_AT);
    uint32_t block_map_offset = load_le32(h + BLOCK_MAP_OFFSET_AT);
    uint32_t data_offset = load_le32(h + DATA_OFFSET_AT);
    uint32_t sector_size = load_le32(h + SECTOR_SIZE_AT);
    uint32_t block_size = load_le32(h + BLOCK_SIZE_AT);
    uint32_t blocks = load_le32(h + BLOCKS_IN_IMAGE_AT);
    if (load_le32(h + SIGNATURE_AT) != SIGNATURE)
        return error_message_set(error_message, -EINVAL, "%s: Image not in VDI format (bad signature %08x)", path,
                                 load_le32(h + SIGNATURE_AT));
    if (version != VERSION_1_1)
        return error_message_set(error_message, -ENOTSUP, "%s: unsupported VDI image (version %u.%u)", path,
                                 version >> 16, version & 0xffff);
    if (block_map_offset % SECTOR)
        return error_message_set(error_message, -ENOTSUP,
                                 "%s: unsupported VDI image (unaligned block map offset 0x%x)", path,
                                 block_map_offset);
    if (data_offset % SECTOR)
        return error_message_set(error_message, -ENOTSUP, "%s: unsupported VDI image (unaligned data offset 0x%x)",
                                 path, data_offset);
    if (sector_size != SECTOR)
        return error_message_set(error_message, -ENOTSUP, "%s: unsupported VDI image (sector size %u is not %u)",
                                 path, sector_size, SECTOR);
    if (block_size != BLOCK_SIZE)
        return error_message_set(error_message, -ENOTSUP, "%s: unsupported VDI image (block size %u is not %u)",
                                 path, block_size, BLOCK_SIZE);
    if (disk_size > (uint64_t)blocks * block_size)
        return error_message_set(error_message, -ENOTSUP,
                                 "%s: unsupported VDI image (disk size %llu, image bitmap has room for %llu)", path,
                                 (unsigned long long)disk_size, (unsigned long long)blocks * block_size);
    if (!is_null_uuid(h + UUID_LINK_AT))
        return error_message_set(error_message, -ENOTSUP, "%s: unsupported VDI image (non-NULL link UUID)", path);
    if (!is_null_uuid(h + UUID_PARENT_AT))
        return error_message_set(error_message, -ENOTSUP, "%s: unsupported VDI image (non-NULL parent UUID)", path);
    if (blocks > MAX_BLOCKS)
        return error_message_set(error_message, -ENOTSUP, "%s: unsupported VDI image (too many blocks %u, max is %u)",
                                 path, blocks, MAX_BLOCKS);
    return 0;
}

static int vdi_map(void *state, uint64_t offset, uint64_t length, struct mapped_extent *out)
{
    struct vdi *v = state;
    uint64_t block = offset / BLOCK_SIZE;
    uint64_t in_block = offset % BLOCK_SIZE;
    uint64_t rest = BLOCK_SIZE - in_block;
    *out = (struct mapped_extent){.length = rest < length ? rest : length};
    uint32_t entry = v->block_map[block];
    if (entry == BLOCK_UNALLOCATED)
        out->kind = MAPPED_UNALLOCATED;
    else if (entry == BLOCK_DISCARDED)
        out->kind = MAPPED_ZERO;
    else {
        out->kind = MAPPED_DATA;
        out->host_offset = v->data_offset + (uint64_t)entry * BLOCK_SIZE + in_block;
    }
    return 0;
}

static void vdi_free(void *state)
{
    struct vdi *v = state;
    if (v)
        free(v->block_map);
    free(v);
}

static const struct mapped_format vdi_format = {
    .name = "vdi",
    .map = vdi_map,
    .free = vdi_free,
};

static int block_map_load(struct vdi *v, struct bdev *file, uint64_t offset, const char *path,
                          char **error_message)
{
    uint64_t bytes = (uint64_t)v->blocks * 4;
    if (offset > file->size || bytes > file->size - offset)
        return error_message_set(error_message, -EINVAL,
                                 "%s: the VDI block map lies beyond the end of the file (truncated?)", path);
    v->block_map = malloc(bytes ? bytes : 1);
    if (!v->block_map)
        return error_message_set(error_message, -ENOMEM, "%s: out of memory", path);
    int rc = bytes ? mapped_image_read_file(file, v->block_map, bytes, offset) : 0;
    if (rc < 0)
        return error_message_set(error_message, rc, "%s: cannot read the VDI block map", path);
    for (uint32_t i = 0; i < v->blocks; i++)
        v->block_map[i] = load_le32((const uint8_t *)&v->block_map[i]);
    return 0;
}

int vdi_open(struct bdev *bdev, const struct bdev_options *options, char **error_message)
{
    const char *path = options->path;
    struct bdev *file;
    int rc = mapped_image_open_file(bdev, options, &file, error_message);
    if (rc < 0)
        return rc;
    uint8_t header[HEADER_SIZE];
    rc = mapped_image_read_file(file, header, sizeof(header), 0);
    if (rc < 0) {
        bdev_close(file);
        return error_message_set(error_message, rc, "%s: the VDI header is truncated", path);
    }
    uint64_t disk_size = load_le64(header + DISK_SIZE_AT);
    if (disk_size > MAX_DISK_SIZE)
        rc = error_message_set(error_message, -ENOTSUP,
                               "%s: Unsupported VDI image size (size is 0x%llx, max supported is 0x%llx)", path,
                               (unsigned long long)disk_size, (unsigned long long)MAX_DISK_SIZE);
    /* VBoxManage convertfromraw makes odd sizes; qemu-img rounds them up to a sector. */
    disk_size = (disk_size + SECTOR - 1) / SECTOR * SECTOR;
    if (rc == 0)
        rc = header_check(header, disk_size, path, error_message);
    struct vdi *v = rc == 0 ? calloc(1, sizeof(*v)) : NULL;
    if (rc == 0 && !v)
        rc = error_message_set(error_message, -ENOMEM, "%s: out of memory", path);
    if (rc == 0) {
        v->data_offset = load_le32(header + DATA_OFFSET_AT);
        v->blocks = load_le32(header + BLOCKS_IN_IMAGE_AT);
        rc = block_map_load(v, file, load_le32(header + BLOCK_MAP_OFFSET_AT), path, error_message);
    }
    if (rc < 0) {
        vdi_free(v);
        bdev_close(file);
        return rc;
    }
    rc = mapped_image_attach(bdev, file, &vdi_format, v, disk_size, BLOCK_SIZE);
    if (rc < 0)
        return error_message_set(error_message, rc, "%s: out of memory", path);
    return 0;
}
