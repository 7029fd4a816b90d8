/*
 * vpc: Virtual PC / Hyper-V VHD.  Every VHD ends with a 512-byte footer
 * ("conectix", big-endian fields, a checksum); a fixed disk is the guest
 * data followed by the footer, a dynamic disk also starts with a copy of
 * it, then a dynamic header ("cxsparse") pointing at the block allocation
 * table (BAT): 32-bit sector offsets, one per block, of a sector bitmap
 * followed by the block's data.  Like qemu-img, reads ignore the bitmaps
 * (an allocated block is read whole) and the virtual size follows the
 * CHS geometry or the footer's current size depending on the program
 * that made the image.  Differencing disks are refused.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/byte_order.h"
#include "block/foreign/foreign.h"
#include "block/foreign/mapped_image.h"
#include "common/error_message.h"

#define SECTOR 512u
#define FOOTER_SIZE 512u
#define DYNAMIC_HEADER_SIZE 1024u
#define COOKIE "conectix"
#define DYNAMIC_COOKIE "cxsparse"
#define TYPE_FIXED 2
#define TYPE_DYNAMIC 3
#define TYPE_DIFFERENCING 4
#define BAT_UNALLOCATED 0xffffffffu
#define MAX_GEOMETRY (65535ull * 16 * 255)
#define MAX_SECTORS 0xff000000ull /* 2040 GiB */

/* Footer field offsets. */
enum {
    FOOTER_DATA_OFFSET_AT = 16,
    FOOTER_CREATOR_APP_AT = 28,
    FOOTER_CURRENT_SIZE_AT = 48,
    FOOTER_CYLINDERS_AT = 56,
    FOOTER_HEADS_AT = 58,
    FOOTER_SECTORS_PER_TRACK_AT = 59,
    FOOTER_TYPE_AT = 60,
    FOOTER_CHECKSUM_AT = 64,
    DYNAMIC_TABLE_OFFSET_AT = 16,
    DYNAMIC_MAX_ENTRIES_AT = 28,
    DYNAMIC_BLOCK_SIZE_AT = 32,
};

struct vpc {
    bool fixed;
    uint32_t block_size;
    uint32_t bitmap_size;
    uint32_t entries;
    uint32_t *bat; /* sector offsets of the blocks' bitmaps */
};

bool vpc_probe(const uint8_t *start, size_t length)
{
    return length >= 8 && !memcmp(start, COOKIE, 8);
}

static uint32_t footer_checksum(const uint8_t *footer)
{
    uint32_t sum = 0;
    for (unsigned i = 0; i < FOOTER_SIZE; i++)
        if (i < FOOTER_CHECKSUM_AT || i >= FOOTER_CHECKSUM_AT + 4)
            sum += footer[i];
    return ~sum;
}

/*
 * Virtual PC sizes a disk by its geometry, Hyper-V and others by the
 * footer's current size: the creator application says which (qemu-img's
 * table), and a maximal geometry always means current size.
 */
static uint64_t virtual_sectors(const uint8_t *footer)
{
    uint64_t chs = (uint64_t)load_be16(footer + FOOTER_CYLINDERS_AT) * footer[FOOTER_HEADS_AT] *
                   footer[FOOTER_SECTORS_PER_TRACK_AT];
    static const char *const size_creators[] = {"win ", "qem2", "d2v ", "CTXS"};
    const uint8_t *app = footer + FOOTER_CREATOR_APP_AT;
    bool use_chs = memcmp(app, "tap\0", 4) != 0;
    for (size_t i = 0; i < sizeof(size_creators) / sizeof(size_creators[0]); i++)
        if (!memcmp(app, size_creators[i], 4))
            use_chs = false;
    if (!use_chs || chs == MAX_GEOMETRY)
        return load_be64(footer + FOOTER_CURRENT_SIZE_AT) / SECTOR;
    return chs;
}

static int vpc_map(void *state, uint64_t offset, uint64_t length, struct mapped_extent *out)
{
    struct vpc *v = state;
    if (v->fixed) {
        *out = (struct mapped_extent){.kind = MAPPED_DATA, .length = length, .host_offset = offset};
        return 0;
    }
    uint64_t block = offset / v->block_size;
    uint64_t in_block = offset % v->block_size;
    uint64_t rest = v->block_size - in_block;
    *out = (struct mapped_extent){.length = rest < length ? rest : length};
    if (v->bat[block] == BAT_UNALLOCATED) {
        out->kind = MAPPED_UNALLOCATED;
    } else {
        out->kind = MAPPED_DATA;
        out->host_offset = (uint64_t)v->bat[block] * SECTOR + v->bitmap_size + in_block;
    }
    return 0;
}

static void vpc_free(void *state)
{
    struct vpc *v = state;
    if (v)
        free(v->bat);
    free(v);
}

static const struct mapped_format vpc_format = {
    .name = "vpc",
    .map = vpc_map,
    .free = vpc_free,
};

/* The dynamic header and the BAT, with qemu-img's checks and messages. */
static int dynamic_load(struct vpc *v, struct bdev *file, const uint8_t *footer, uint64_t sectors, const char *path,
                        char **error_message)
{
    uint8_t header[DYNAMIC_HEADER_SIZE];
    uint64_t header_offset = load_be64(footer + FOOTER_DATA_OFFSET_AT);
    if (mapped_image_read_file(file, header, sizeof(header), header_offset) < 0)
        return error_message_set(error_message, -EINVAL, "%s: Error reading dynamic VHD header", path);
    if (memcmp(header, DYNAMIC_COOKIE, 8))
        return error_message_set(error_message, -EINVAL, "%s: Invalid header magic", path);
    v->block_size = load_be32(header + DYNAMIC_BLOCK_SIZE_AT);
    if (v->block_size < SECTOR || (v->block_size & (v->block_size - 1)))
        return error_message_set(error_message, -EINVAL, "%s: Invalid block size %u", path, v->block_size);
    v->bitmap_size = ((v->block_size / (8 * SECTOR)) + SECTOR - 1) & ~(SECTOR - 1);
    v->entries = load_be32(header + DYNAMIC_MAX_ENTRIES_AT);
    if (sectors * SECTOR / v->block_size > 0xffffffffull)
        return error_message_set(error_message, -EINVAL, "%s: Too many blocks", path);
    if ((uint64_t)v->entries * v->block_size < sectors * SECTOR)
        return error_message_set(error_message, -EINVAL, "%s: Page table too small", path);
    if (v->entries > 0x7fffffff / 4)
        return error_message_set(error_message, -EINVAL, "%s: Max Table Entries too large (%u)", path, v->entries);
    uint64_t table_offset = load_be64(header + DYNAMIC_TABLE_OFFSET_AT);
    uint64_t table_bytes = (uint64_t)v->entries * 4;
    if (table_offset > file->size || table_bytes > file->size - table_offset)
        return error_message_set(error_message, -EINVAL, "%s: Error reading pagetable (beyond the end of the file)",
                                 path);
    v->bat = malloc(table_bytes ? table_bytes : 1);
    if (!v->bat)
        return error_message_set(error_message, -ENOMEM, "%s: Unable to allocate memory for page table", path);
    if (table_bytes && mapped_image_read_file(file, v->bat, table_bytes, table_offset) < 0)
        return error_message_set(error_message, -EIO, "%s: Error reading pagetable", path);
    /* Every allocated block, bitmap and data, must lie inside the file. */
    uint64_t end = table_offset + table_bytes;
    for (uint32_t i = 0; i < v->entries; i++) {
        v->bat[i] = load_be32((const uint8_t *)&v->bat[i]);
        if (v->bat[i] != BAT_UNALLOCATED) {
            uint64_t next = (uint64_t)v->bat[i] * SECTOR + v->bitmap_size + v->block_size;
            if (next > end)
                end = next;
        }
    }
    if (end > file->size)
        return error_message_set(error_message, -EINVAL,
                                 "%s: block-vpc: free_data_block_offset points after the end of file. The image "
                                 "has been truncated.",
                                 path);
    return 0;
}

int vpc_open(struct bdev *bdev, const struct bdev_options *options, char **error_message)
{
    const char *path = options->path;
    struct bdev *file;
    int rc = mapped_image_open_file(bdev, options, &file, error_message);
    if (rc < 0)
        return rc;
    uint8_t footer[FOOTER_SIZE] = {0};
    bool fixed = false;
    if (file->size < FOOTER_SIZE)
        rc = error_message_set(error_message, -EINVAL, "%s: File too small for a VHD header", path);
    else if (mapped_image_read_file(file, footer, FOOTER_SIZE, 0) < 0)
        rc = error_message_set(error_message, -EIO, "%s: Unable to read VHD header", path);
    else if (memcmp(footer, COOKIE, 8)) {
        /* A fixed disk has its footer only at the end. */
        fixed = true;
        if (mapped_image_read_file(file, footer, FOOTER_SIZE, file->size - FOOTER_SIZE) < 0 ||
            memcmp(footer, COOKIE, 8))
            rc = error_message_set(error_message, -EINVAL, "%s: invalid VPC image", path);
    }
    if (rc == 0 && footer_checksum(footer) != load_be32(footer + FOOTER_CHECKSUM_AT))
        rc = error_message_set(error_message, -EINVAL, "%s: Incorrect header checksum", path);
    uint32_t type = load_be32(footer + FOOTER_TYPE_AT);
    if (rc == 0 && type == TYPE_DIFFERENCING)
        rc = error_message_set(error_message, -ENOTSUP,
                               "%s: differencing VHD images are not supported (it needs its parent image)", path);
    uint64_t sectors = virtual_sectors(footer);
    if (rc == 0 && sectors > MAX_SECTORS)
        rc = error_message_set(error_message, -EFBIG, "%s: the VHD is larger than 2040 GiB", path);
    if (rc == 0 && fixed && sectors * SECTOR > file->size - FOOTER_SIZE)
        rc = error_message_set(error_message, -EINVAL, "%s: the fixed VHD is shorter than its size (truncated)",
                               path);
    struct vpc *v = rc == 0 ? calloc(1, sizeof(*v)) : NULL;
    if (rc == 0 && !v)
        rc = error_message_set(error_message, -ENOMEM, "%s: out of memory", path);
    if (rc == 0) {
        v->fixed = fixed;
        if (!fixed)
            rc = dynamic_load(v, file, footer, sectors, path, error_message);
    }
    if (rc < 0) {
        vpc_free(v);
        bdev_close(file);
        return rc;
    }
    rc = mapped_image_attach(bdev, file, &vpc_format, v, sectors * SECTOR, fixed ? 0 : v->block_size);
    if (rc < 0)
        return error_message_set(error_message, rc, "%s: out of memory", path);
    return 0;
}
