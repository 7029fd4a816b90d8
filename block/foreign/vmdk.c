/*
 * vmdk: VMware's hosted sparse extent (magic "KDMV"), the one file of a
 * monolithicSparse or streamOptimized image.  Guest grains map through a
 * grain directory (GD) of grain tables (GT) whose 32-bit entries are
 * sector offsets: 0 unallocated, 1 a zeroed grain (with the zeroed-grain
 * flag), else where the grain is, raw or (streamOptimized) a deflate
 * stream behind a 12-byte grain marker.  A streamOptimized image written
 * as a stream keeps its real header in a footer before the end-of-stream
 * marker.  Descriptor files of split or flat images are refused by name.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/byte_order.h"
#include "block/foreign/foreign.h"
#include "block/foreign/mapped_image.h"
#include "common/error_message.h"

#define SECTOR 512u
#define HEADER_MAGIC "KDMV"
#define COWD_MAGIC "COWD"
#define FLAG_ZERO_GRAIN (1u << 2)
#define FLAG_COMPRESSED (1u << 16)
#define FLAG_MARKERS (1u << 17)
#define COMPRESSION_DEFLATE 1
#define GD_AT_END UINT64_MAX
#define GTE_ZEROED 1u
#define MARKER_END_OF_STREAM 0
#define MARKER_FOOTER 3
#define GRAIN_MARKER_SIZE 12 /* lba (8), size (4), then the compressed bytes */
/* The limits qemu-img applies, so an absurd header is refused before it allocates. */
#define MAX_GRAIN_SECTORS 0x200000u
#define MAX_GTES_PER_GT 512u
#define MAX_GD_ENTRIES (32u * 1024 * 1024)
#define GT_CACHE_SIZE 16

/* The sparse extent header fields luna uses (little-endian, packed, after the magic). */
struct vmdk_header {
    uint32_t version;
    uint32_t flags;
    uint64_t capacity;  /* sectors */
    uint64_t grain;     /* sectors */
    uint64_t descriptor_offset;
    uint64_t descriptor_size;
    uint32_t gtes_per_gt;
    uint64_t gd_offset; /* sectors */
    uint64_t overhead;  /* sectors: where grains may start */
    uint16_t compression;
};

struct grain_table {
    uint32_t sector; /* 0: slot empty */
    uint64_t last_used;
    uint32_t *entries;
};

struct vmdk {
    struct bdev *file;
    uint64_t size;
    uint64_t grain_size;     /* bytes */
    uint32_t gtes_per_gt;
    uint64_t gd_entries;
    uint32_t *gd;            /* sector offsets of the grain tables */
    bool compressed;
    bool markers;
    bool zero_grain;
    pthread_mutex_t lock;    /* the GT cache */
    uint64_t use_clock;
    struct grain_table cache[GT_CACHE_SIZE];
};

bool vmdk_probe(const uint8_t *start, size_t length)
{
    if (length >= 4 && (!memcmp(start, HEADER_MAGIC, 4) || !memcmp(start, COWD_MAGIC, 4)))
        return true;
    /* A descriptor file: comments and blank lines, then "version=N". */
    const char *p = (const char *)start, *end = p + length;
    while (p < end) {
        if (*p == '#') {
            while (p < end && *p != '\n')
                p++;
            p++;
            continue;
        }
        if (*p == ' ' || *p == '\r' || *p == '\n') {
            while (p < end && (*p == ' ' || *p == '\r'))
                p++;
            if (p == end || *p != '\n')
                return false;
            p++;
            continue;
        }
        return end - p >= 10 && !strncmp(p, "version=", 8) && p[8] >= '1' && p[8] <= '3' &&
               (p[9] == '\n' || (p[9] == '\r' && end - p >= 11 && p[10] == '\n'));
    }
    return false;
}

static void header_parse(const uint8_t *b, struct vmdk_header *h)
{
    /* Offsets in the packed on-disk header, magic included. */
    *h = (struct vmdk_header){
        .version = load_le32(b + 4),
        .flags = load_le32(b + 8),
        .capacity = load_le64(b + 12),
        .grain = load_le64(b + 20),
        .descriptor_offset = load_le64(b + 28),
        .descriptor_size = load_le64(b + 36),
        .gtes_per_gt = load_le32(b + 44),
        .gd_offset = load_le64(b + 56),
        .overhead = load_le64(b + 64),
        .compression = load_le16(b + 77),
    };
}

/* The value of key="value" in descriptor text, or NULL. */
static char *descriptor_value(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p)
        return NULL;
    p += strlen(key);
    while (*p == ' ')
        p++;
    if (*p++ != '=')
        return NULL;
    while (*p == ' ')
        p++;
    if (*p++ != '"')
        return NULL;
    const char *close = strchr(p, '"');
    return close ? strndup(p, (size_t)(close - p)) : NULL;
}

/* A text descriptor (split, flat or VMFS images): say which it is and that luna does not read it. */
static int refuse_descriptor_file(struct bdev *file, const char *path, char **error_message)
{
    char text[4096] = {0};
    uint64_t length = file->size < sizeof(text) - 1 ? file->size : sizeof(text) - 1;
    int rc = mapped_image_read_file(file, text, length, 0);
    if (rc < 0)
        return error_message_set(error_message, rc, "%s: cannot read the vmdk descriptor", path);
    char *type = descriptor_value(text, "createType");
    if (!type)
        return error_message_set(error_message, -EINVAL, "%s: invalid VMDK image descriptor (no createType)",
                                 path);
    rc = error_message_set(error_message, -ENOTSUP,
                           "%s: vmdk createType '%s' is not supported (luna reads monolithicSparse and "
                           "streamOptimized images)",
                           path, type);
    free(type);
    return rc;
}

/* streamOptimized written as a stream: the header that counts is in the footer. */
static int read_footer(struct bdev *file, const char *path, struct vmdk_header *header, char **error_message)
{
    uint8_t footer[3 * SECTOR];
    if (file->size < sizeof(footer) + SECTOR)
        return error_message_set(error_message, -EINVAL, "%s: Invalid footer (the file is too short)", path);
    int rc = mapped_image_read_file(file, footer, sizeof(footer), file->size - sizeof(footer));
    if (rc < 0)
        return error_message_set(error_message, rc, "%s: cannot read the vmdk footer", path);
    const uint8_t *footer_marker = footer, *footer_header = footer + SECTOR, *end_marker = footer + 2 * SECTOR;
    if (memcmp(footer_header, HEADER_MAGIC, 4) || load_le32(footer_marker + 8) != 0 ||
        load_le32(footer_marker + 12) != MARKER_FOOTER || load_le64(end_marker) != 0 ||
        load_le32(end_marker + 8) != 0 || load_le32(end_marker + 12) != MARKER_END_OF_STREAM)
        return error_message_set(error_message, -EINVAL, "%s: Invalid footer", path);
    header_parse(footer_header, header);
    return 0;
}

static int header_check(const struct vmdk_header *h, uint64_t file_size, const char *path, char **error_message)
{
    if (h->version > 3)
        return error_message_set(error_message, -ENOTSUP, "%s: Unsupported VMDK version %u", path, h->version);
    if (h->gtes_per_gt > MAX_GTES_PER_GT)
        return error_message_set(error_message, -EINVAL, "%s: L2 table size too big", path);
    if (h->gtes_per_gt == 0 || h->grain == 0)
        return error_message_set(error_message, -EINVAL, "%s: L1 entry size is invalid", path);
    if (h->grain > MAX_GRAIN_SECTORS)
        return error_message_set(error_message, -EFBIG, "%s: Invalid granularity, image may be corrupt", path);
    if (h->capacity > (UINT64_MAX >> 10))
        return error_message_set(error_message, -EFBIG, "%s: capacity %llu sectors is too large", path,
                                 (unsigned long long)h->capacity);
    uint64_t gt_coverage = (uint64_t)h->gtes_per_gt * h->grain;
    if ((h->capacity + gt_coverage - 1) / gt_coverage > MAX_GD_ENTRIES)
        return error_message_set(error_message, -EFBIG, "%s: L1 size too big", path);
    if (h->overhead > file_size / SECTOR)
        return error_message_set(error_message, -EINVAL, "%s: File truncated, expecting at least %llu bytes", path,
                                 (unsigned long long)h->overhead * SECTOR);
    if (h->compression != 0 && h->compression != COMPRESSION_DEFLATE)
        return error_message_set(error_message, -ENOTSUP, "%s: unknown vmdk compression algorithm %u", path,
                                 h->compression);
    return 0;
}

static int grain_directory_load(struct vmdk *v, const struct vmdk_header *h, const char *path,
                                char **error_message)
{
    uint64_t bytes = v->gd_entries * 4;
    if (h->gd_offset > v->file->size / SECTOR || bytes > v->file->size - h->gd_offset * SECTOR)
        return error_message_set(error_message, -EINVAL,
                                 "%s: the grain directory lies beyond the end of the file (truncated?)", path);
    uint8_t *raw = malloc(bytes ? bytes : 1);
    v->gd = calloc(v->gd_entries ? v->gd_entries : 1, sizeof(*v->gd));
    if (!raw || !v->gd) {
        free(raw);
        return error_message_set(error_message, -ENOMEM, "%s: out of memory", path);
    }
    int rc = bytes ? mapped_image_read_file(v->file, raw, bytes, h->gd_offset * SECTOR) : 0;
    if (rc < 0) {
        free(raw);
        return error_message_set(error_message, rc, "%s: cannot read the grain directory", path);
    }
    uint64_t gt_bytes = (uint64_t)v->gtes_per_gt * 4;
    for (uint64_t i = 0; i < v->gd_entries; i++) {
        v->gd[i] = load_le32(raw + i * 4);
        uint64_t at = (uint64_t)v->gd[i] * SECTOR;
        if (v->gd[i] && (at > v->file->size || gt_bytes > v->file->size - at)) {
            free(raw);
            return error_message_set(error_message, -EINVAL,
                                     "%s: grain directory entry %llu points beyond the end of the file (%#x)", path,
                                     (unsigned long long)i, v->gd[i]);
        }
    }
    free(raw);
    return 0;
}

/* The GT entry for grain, through the cache.  0 or -errno. */
static int grain_entry(struct vmdk *v, uint64_t grain, uint32_t *entry)
{
    uint32_t sector = v->gd[grain / v->gtes_per_gt];
    pthread_mutex_lock(&v->lock);
    struct grain_table *slot = NULL, *victim = &v->cache[0];
    for (int i = 0; i < GT_CACHE_SIZE; i++) {
        if (v->cache[i].sector == sector) {
            slot = &v->cache[i];
            break;
        }
        if (v->cache[i].last_used < victim->last_used)
            victim = &v->cache[i];
    }
    int rc = 0;
    if (!slot) {
        slot = victim;
        slot->sector = 0;
        uint64_t bytes = (uint64_t)v->gtes_per_gt * 4;
        if (!slot->entries)
            slot->entries = malloc(bytes);
        rc = slot->entries ? mapped_image_read_file(v->file, slot->entries, bytes, (uint64_t)sector * SECTOR)
                           : -ENOMEM;
        if (rc == 0) {
            for (uint32_t i = 0; i < v->gtes_per_gt; i++)
                slot->entries[i] = load_le32((const uint8_t *)&slot->entries[i]);
            slot->sector = sector;
        }
    }
    if (rc == 0) {
        slot->last_used = ++v->use_clock;
        *entry = slot->entries[grain % v->gtes_per_gt];
    }
    pthread_mutex_unlock(&v->lock);
    return rc < 0 ? -EIO : 0;
}

static int vmdk_map(void *state, uint64_t offset, uint64_t length, struct mapped_extent *out)
{
    struct vmdk *v = state;
    uint64_t grain = offset / v->grain_size;
    uint64_t in_grain = offset % v->grain_size;
    if (v->gd[grain / v->gtes_per_gt] == 0) {
        /* No grain table: the whole span it would cover is unallocated. */
        uint64_t span_end = (grain / v->gtes_per_gt + 1) * v->gtes_per_gt * v->grain_size;
        uint64_t span = span_end - offset;
        *out = (struct mapped_extent){.kind = MAPPED_UNALLOCATED, .length = span < length ? span : length};
        return 0;
    }
    uint32_t entry = 0;
    int rc = grain_entry(v, grain, &entry);
    if (rc < 0)
        return rc;
    uint64_t rest = v->grain_size - in_grain;
    *out = (struct mapped_extent){.length = rest < length ? rest : length};
    if (entry == 0)
        out->kind = MAPPED_UNALLOCATED;
    else if (entry == GTE_ZEROED && v->zero_grain)
        out->kind = MAPPED_ZERO;
    else if (v->compressed) {
        out->kind = MAPPED_COMPRESSED;
        out->host_offset = (uint64_t)entry * SECTOR;
        out->unit_offset = grain * v->grain_size;
    } else {
        out->kind = MAPPED_DATA;
        out->host_offset = (uint64_t)entry * SECTOR + in_grain;
    }
    return 0;
}

static int64_t vmdk_read_grain(void *state, const struct mapped_extent *extent, uint8_t *grain)
{
    struct vmdk *v = state;
    uint64_t at = extent->host_offset;
    /* Compressed data never legitimately exceeds twice the grain (qemu-img's bound too). */
    uint64_t length = 2 * v->grain_size;
    if (v->markers) {
        uint8_t marker[GRAIN_MARKER_SIZE];
        if (mapped_image_read_file(v->file, marker, sizeof(marker), at) < 0)
            return -EIO;
        uint32_t size = load_le32(marker + 8);
        if (size == 0 || size > length)
            return -EIO;
        length = size;
        at += GRAIN_MARKER_SIZE;
    }
    if (at > v->file->size)
        return -EIO;
    if (length > v->file->size - at) {
        if (v->markers)
            return -EIO;
        length = v->file->size - at; /* without markers the stream's length is not stored */
    }
    uint8_t *compressed = malloc(length ? length : 1);
    if (!compressed)
        return -ENOMEM;
    int rc = mapped_image_read_file(v->file, compressed, length, at);
    uLongf produced = v->grain_size;
    if (rc == 0 && uncompress(grain, &produced, compressed, length) != Z_OK)
        rc = -EIO;
    free(compressed);
    return rc < 0 ? rc : (int64_t)produced;
}

static void vmdk_free(void *state)
{
    struct vmdk *v = state;
    if (!v)
        return;
    for (int i = 0; i < GT_CACHE_SIZE; i++)
        free(v->cache[i].entries);
    free(v->gd);
    pthread_mutex_destroy(&v->lock);
    free(v);
}

static const struct mapped_format vmdk_format = {
    .name = "vmdk",
    .map = vmdk_map,
    .read_unit = vmdk_read_grain,
    .free = vmdk_free,
};

int vmdk_open(struct bdev *bdev, const struct bdev_options *options, char **error_message)
{
    const char *path = options->path;
    struct bdev *file;
    int rc = mapped_image_open_file(bdev, options, &file, error_message);
    if (rc < 0)
        return rc;
    uint8_t start[SECTOR] = {0};
    rc = mapped_image_read_file(file, start, file->size < SECTOR ? file->size : SECTOR, 0);
    if (rc < 0 || file->size < 4) {
        bdev_close(file);
        return error_message_set(error_message, rc < 0 ? rc : -EINVAL, "%s: File is too small, not a valid image",
                                 path);
    }
    if (memcmp(start, HEADER_MAGIC, 4)) {
        if (!memcmp(start, COWD_MAGIC, 4))
            rc = error_message_set(error_message, -ENOTSUP,
                                   "%s: VMware 3 (COWD) sparse extents are not supported", path);
        else if (vmdk_probe(start, sizeof(start)))
            rc = refuse_descriptor_file(file, path, error_message);
        else
            rc = error_message_set(error_message, -EINVAL, "%s: Image not in VMDK format", path);
        bdev_close(file);
        return rc;
    }
    if (file->size < SECTOR) {
        bdev_close(file);
        return error_message_set(error_message, -EINVAL, "%s: the vmdk header is truncated", path);
    }
    struct vmdk_header header;
    header_parse(start, &header);
    if (header.gd_offset == GD_AT_END)
        rc = read_footer(file, path, &header, error_message);
    if (rc == 0)
        rc = header_check(&header, file->size, path, error_message);
    struct vmdk *v = rc == 0 ? calloc(1, sizeof(*v)) : NULL;
    if (rc == 0 && !v)
        rc = error_message_set(error_message, -ENOMEM, "%s: out of memory", path);
    if (rc < 0) {
        bdev_close(file);
        return rc;
    }
    pthread_mutex_init(&v->lock, NULL);
    v->file = file;
    v->size = header.capacity * SECTOR;
    v->grain_size = header.grain * SECTOR;
    v->gtes_per_gt = header.gtes_per_gt;
    uint64_t gt_coverage = (uint64_t)header.gtes_per_gt * header.grain;
    v->gd_entries = (header.capacity + gt_coverage - 1) / gt_coverage;
    v->compressed = header.compression == COMPRESSION_DEFLATE;
    v->markers = (header.flags & FLAG_MARKERS) != 0;
    v->zero_grain = (header.flags & FLAG_ZERO_GRAIN) != 0;
    rc = grain_directory_load(v, &header, path, error_message);
    if (rc < 0) {
        vmdk_free(v);
        bdev_close(file);
        return rc;
    }
    rc = mapped_image_attach(bdev, file, &vmdk_format, v, v->size, (uint32_t)v->grain_size);
    if (rc < 0)
        return error_message_set(error_message, rc, "%s: out of memory", path);
    return 0;
}
