#include "block/qcow2/qcow2_format.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error_message.h"

static bool aligned(uint64_t offset, uint32_t cluster_bits) { return (offset & ((1ull << cluster_bits) - 1)) == 0; }

/* A table of entries at offset must lie inside the file. */
static bool table_in_file(uint64_t offset, uint64_t bytes, uint64_t file_size)
{
    return offset <= file_size && bytes <= file_size - offset;
}

int qcow2_header_decode(const uint8_t *buffer, size_t length, uint64_t file_size, struct qcow2_header *out,
                        char **error_message)
{
    if (length < QCOW2_V2_HEADER_LENGTH || qcow2_be32(buffer) != QCOW2_MAGIC) {
        error_message_set(error_message, 0, "not a qcow2 image (bad magic)");
        return -EINVAL;
    }
    struct qcow2_header h = {
        .version = qcow2_be32(buffer + 4),
        .backing_file_offset = qcow2_be64(buffer + 8),
        .backing_file_size = qcow2_be32(buffer + 16),
        .cluster_bits = qcow2_be32(buffer + 20),
        .size = qcow2_be64(buffer + 24),
        .crypt_method = qcow2_be32(buffer + 32),
        .l1_size = qcow2_be32(buffer + 36),
        .l1_table_offset = qcow2_be64(buffer + 40),
        .refcount_table_offset = qcow2_be64(buffer + 48),
        .refcount_table_clusters = qcow2_be32(buffer + 56),
        .nb_snapshots = qcow2_be32(buffer + 60),
        .snapshots_offset = qcow2_be64(buffer + 64),
        .refcount_order = 4,
        .header_length = QCOW2_V2_HEADER_LENGTH,
    };
    if (h.version != 2 && h.version != 3) {
        error_message_set(error_message, 0, "unsupported qcow2 version %u", h.version);
        return -ENOTSUP;
    }
    if (h.version == 3) {
        if (length < QCOW2_V3_MIN_HEADER_LENGTH) {
            error_message_set(error_message, 0, "qcow2 header truncated");
            return -EINVAL;
        }
        h.incompatible_features = qcow2_be64(buffer + 72);
        h.compatible_features = qcow2_be64(buffer + 80);
        h.autoclear_features = qcow2_be64(buffer + 88);
        h.refcount_order = qcow2_be32(buffer + 96);
        h.header_length = qcow2_be32(buffer + 100);
        if (h.header_length < QCOW2_V3_MIN_HEADER_LENGTH || h.header_length % 8 != 0) {
            error_message_set(error_message, 0, "invalid qcow2 header_length %u", h.header_length);
            return -EINVAL;
        }
        if (h.header_length > 104) {
            if (length < 105) {
                error_message_set(error_message, 0, "qcow2 header truncated");
                return -EINVAL;
            }
            h.compression_type = buffer[104];
        }
    }
    if (h.cluster_bits < QCOW2_MIN_CLUSTER_BITS || h.cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        error_message_set(error_message, 0, "unsupported cluster size: cluster_bits %u (9 to 21 allowed)",
                          h.cluster_bits);
        return -EINVAL;
    }
    uint64_t cluster_size = 1ull << h.cluster_bits;
    if (h.header_length > cluster_size) {
        error_message_set(error_message, 0, "qcow2 header_length %u is larger than a cluster", h.header_length);
        return -EINVAL;
    }
    if (h.crypt_method != 0) {
        error_message_set(error_message, 0, "encrypted qcow2 images (crypt_method %u) are not supported",
                          h.crypt_method);
        return -ENOTSUP;
    }
    if (h.refcount_order > 6) {
        error_message_set(error_message, 0, "invalid refcount_order %u (at most 6)", h.refcount_order);
        return -EINVAL;
    }
    if ((h.incompatible_features & QCOW2_INCOMPAT_EXTENDED_L2) && h.cluster_bits < 14) {
        error_message_set(error_message, 0, "extended L2 entries need clusters of at least 16 KiB");
        return -EINVAL;
    }
    bool compression_bit = (h.incompatible_features & QCOW2_INCOMPAT_COMPRESSION) != 0;
    if (h.compression_type > QCOW2_COMPRESSION_ZSTD || compression_bit != (h.compression_type != 0)) {
        error_message_set(error_message, 0, "invalid compression_type %u for its feature bit", h.compression_type);
        return -EINVAL;
    }
    if (h.size > INT64_MAX) {
        error_message_set(error_message, 0, "invalid virtual size %llu", (unsigned long long)h.size);
        return -EINVAL;
    }
    uint64_t l1_bytes = (uint64_t)h.l1_size * 8;
    if (l1_bytes > QCOW2_MAX_L1_BYTES) {
        error_message_set(error_message, 0, "L1 table too large (%u entries)", h.l1_size);
        return -EINVAL;
    }
    /* Each L1 entry maps one L2 table's worth of clusters. */
    uint64_t bytes_per_l1_entry = cluster_size / qcow2_l2_entry_size(&h) * cluster_size;
    if ((h.size + bytes_per_l1_entry - 1) / bytes_per_l1_entry > h.l1_size) {
        error_message_set(error_message, 0, "L1 table too small for the virtual size");
        return -EINVAL;
    }
    if (h.l1_size && (!aligned(h.l1_table_offset, h.cluster_bits) ||
                      !table_in_file(h.l1_table_offset, l1_bytes, file_size))) {
        error_message_set(error_message, 0, "invalid L1 table offset %#llx",
                          (unsigned long long)h.l1_table_offset);
        return -EINVAL;
    }
    uint64_t reftable_bytes = (uint64_t)h.refcount_table_clusters << h.cluster_bits;
    if (h.refcount_table_clusters == 0 || reftable_bytes > QCOW2_MAX_REFTABLE_BYTES) {
        error_message_set(error_message, 0, "invalid refcount table size (%u clusters)",
                          h.refcount_table_clusters);
        return -EINVAL;
    }
    if (!aligned(h.refcount_table_offset, h.cluster_bits) ||
        !table_in_file(h.refcount_table_offset, reftable_bytes, file_size)) {
        error_message_set(error_message, 0, "invalid refcount table offset %#llx",
                          (unsigned long long)h.refcount_table_offset);
        return -EINVAL;
    }
    if (h.nb_snapshots > 65536) {
        error_message_set(error_message, 0, "too many snapshots (%u)", h.nb_snapshots);
        return -EINVAL;
    }
    if (h.nb_snapshots && (!aligned(h.snapshots_offset, h.cluster_bits) || h.snapshots_offset >= file_size)) {
        error_message_set(error_message, 0, "invalid snapshot table offset %#llx",
                          (unsigned long long)h.snapshots_offset);
        return -EINVAL;
    }
    if (h.backing_file_offset) {
        if (h.backing_file_size > QCOW2_MAX_BACKING_NAME || h.backing_file_size == 0) {
            error_message_set(error_message, 0, "invalid backing file name length %u", h.backing_file_size);
            return -EINVAL;
        }
        if (h.backing_file_offset < h.header_length || h.backing_file_offset > cluster_size) {
            error_message_set(error_message, 0, "invalid backing file name offset %#llx",
                              (unsigned long long)h.backing_file_offset);
            return -EINVAL;
        }
    }
    *out = h;
    return 0;
}

size_t qcow2_image_header_bytes(const struct qcow2_header *header)
{
    size_t bytes = (size_t)qcow2_cluster_size(header);
    if (header->backing_file_offset) {
        size_t name_end = (size_t)header->backing_file_offset + header->backing_file_size;
        if (name_end > bytes)
            bytes = name_end;
    }
    return bytes;
}

/* A string extension or name must not contain NUL: it would silently truncate the name. */
static bool has_nul(const uint8_t *data, size_t length) { return memchr(data, 0, length) != NULL; }

static int decode_feature_table(struct qcow2_image_header *image, const uint8_t *data, uint32_t length,
                                char **error_message)
{
    if (length % 48 != 0) {
        error_message_set(error_message, 0, "invalid feature name table length %u", length);
        return -EINVAL;
    }
    size_t count = length / 48;
    if (!count)
        return 0;
    image->feature_names = calloc(count, sizeof(*image->feature_names));
    if (!image->feature_names)
        return -ENOMEM;
    for (size_t i = 0; i < count; i++) {
        const uint8_t *entry = data + i * 48;
        struct qcow2_feature_name *name = &image->feature_names[i];
        name->type = entry[0];
        name->bit = entry[1];
        memcpy(name->name, entry + 2, 46);
        name->name[46] = '\0';
    }
    image->feature_name_count = count;
    return 0;
}

static int keep_extension(struct qcow2_image_header *image, uint32_t type, const uint8_t *data, uint32_t length)
{
    struct qcow2_extension *grown =
        realloc(image->extensions, (image->extension_count + 1) * sizeof(*image->extensions));
    if (!grown)
        return -ENOMEM;
    image->extensions = grown;
    uint8_t *copy = malloc(length ? length : 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, data, length);
    image->extensions[image->extension_count++] = (struct qcow2_extension){type, length, copy};
    return 0;
}

static int decode_extensions(struct qcow2_image_header *image, const uint8_t *buffer, size_t start, size_t end,
                             char **error_message)
{
    bool seen_backing_format = false, seen_feature_table = false, seen_data_file = false;
    size_t offset = start;
    for (;;) {
        if (end < 8 || offset > end - 8) {
            /* QEMU tolerates an extension area that simply runs to the end. */
            return 0;
        }
        uint32_t type = qcow2_be32(buffer + offset);
        uint32_t length = qcow2_be32(buffer + offset + 4);
        offset += 8;
        if (type == QCOW2_EXT_END)
            return 0;
        if (length > end - offset) {
            error_message_set(error_message, 0, "header extension %#x runs past the end of the header area",
                              type);
            return -EINVAL;
        }
        const uint8_t *data = buffer + offset;
        int rc = 0;
        switch (type) {
        case QCOW2_EXT_BACKING_FORMAT:
            if (seen_backing_format || length == 0 || length > 15 || has_nul(data, length)) {
                error_message_set(error_message, 0, "invalid backing format extension");
                return -EINVAL;
            }
            seen_backing_format = true;
            image->backing_format = strndup((const char *)data, length);
            rc = image->backing_format ? 0 : -ENOMEM;
            break;
        case QCOW2_EXT_FEATURE_TABLE:
            if (seen_feature_table) {
                error_message_set(error_message, 0, "duplicate feature name table");
                return -EINVAL;
            }
            seen_feature_table = true;
            rc = decode_feature_table(image, data, length, error_message);
            break;
        case QCOW2_EXT_DATA_FILE:
            if (seen_data_file || length == 0 || length > 4095 || has_nul(data, length)) {
                error_message_set(error_message, 0, "invalid external data file extension");
                return -EINVAL;
            }
            seen_data_file = true;
            image->data_file = strndup((const char *)data, length);
            rc = image->data_file ? 0 : -ENOMEM;
            break;
        default:
            rc = keep_extension(image, type, data, length);
            break;
        }
        if (rc < 0) {
            if (rc == -ENOMEM)
                error_message_set(error_message, 0, "out of memory");
            return rc;
        }
        size_t padded = ((size_t)length + 7) & ~(size_t)7;
        if (padded > end - offset)
            return 0;
        offset += padded;
    }
}

int qcow2_image_header_decode(const uint8_t *buffer, size_t length, uint64_t file_size,
                              struct qcow2_image_header *out, char **error_message)
{
    memset(out, 0, sizeof(*out));
    int rc = qcow2_header_decode(buffer, length, file_size, &out->header, error_message);
    if (rc < 0)
        return rc;
    const struct qcow2_header *h = &out->header;
    if (length < qcow2_image_header_bytes(h)) {
        error_message_set(error_message, 0, "qcow2 image truncated inside its header");
        return -EINVAL;
    }
    size_t end = h->backing_file_offset ? (size_t)h->backing_file_offset : (size_t)qcow2_cluster_size(h);
    rc = decode_extensions(out, buffer, h->header_length, end, error_message);
    if (rc == 0 && h->backing_file_offset) {
        const uint8_t *name = buffer + h->backing_file_offset;
        if (has_nul(name, h->backing_file_size)) {
            error_message_set(error_message, 0, "backing file name contains a NUL byte");
            rc = -EINVAL;
        } else if (!(out->backing_file = strndup((const char *)name, h->backing_file_size))) {
            error_message_set(error_message, 0, "out of memory");
            rc = -ENOMEM;
        }
    }
    if (rc == 0 && (h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) && !out->data_file) {
        error_message_set(error_message, 0, "image uses an external data file but does not name it");
        rc = -EINVAL;
    }
    uint64_t unknown = h->incompatible_features & ~QCOW2_INCOMPAT_KNOWN;
    if (rc == 0 && unknown) {
        char *names = qcow2_feature_names_describe(out, unknown);
        error_message_set(error_message, 0, "unsupported qcow2 feature(s): %s", names ? names : "?");
        free(names);
        rc = -ENOTSUP;
    }
    if (rc < 0)
        qcow2_image_header_clear(out);
    return rc;
}

void qcow2_image_header_clear(struct qcow2_image_header *image)
{
    free(image->backing_file);
    free(image->backing_format);
    free(image->data_file);
    free(image->feature_names);
    for (size_t i = 0; i < image->extension_count; i++)
        free(image->extensions[i].data);
    free(image->extensions);
    memset(image, 0, sizeof(*image));
}

static const struct qcow2_feature_name default_feature_names[] = {
    {0, 0, "dirty bit"},
    {0, 1, "corrupt bit"},
    {0, 2, "external data file"},
    {0, 3, "compression type"},
    {0, 4, "extended L2 entries"},
    {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},
    {2, 1, "raw external data"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

int qcow2_image_header_set_default_feature_names(struct qcow2_image_header *image)
{
    struct qcow2_feature_name *names = malloc(sizeof(default_feature_names));
    if (!names)
        return -ENOMEM;
    memcpy(names, default_feature_names, sizeof(default_feature_names));
    free(image->feature_names);
    image->feature_names = names;
    image->feature_name_count = COUNT(default_feature_names);
    return 0;
}

char *qcow2_feature_names_describe(const struct qcow2_image_header *image, uint64_t mask)
{
    size_t capacity = 64 * 64, used = 0;
    char *text = malloc(capacity);
    if (!text)
        return NULL;
    text[0] = '\0';
    for (unsigned bit = 0; bit < 64; bit++) {
        if (!(mask & (1ull << bit)))
            continue;
        const char *name = NULL;
        for (size_t i = 0; i < image->feature_name_count; i++)
            if (image->feature_names[i].type == 0 && image->feature_names[i].bit == bit)
                name = image->feature_names[i].name;
        for (size_t i = 0; !name && i < COUNT(default_feature_names); i++)
            if (default_feature_names[i].type == 0 && default_feature_names[i].bit == bit)
                name = default_feature_names[i].name;
        int n = name ? snprintf(text + used, capacity - used, "%s%s", used ? ", " : "", name)
                     : snprintf(text + used, capacity - used, "%sunknown bit %u", used ? ", " : "", bit);
        if (n > 0 && (size_t)n < capacity - used)
            used += (size_t)n;
    }
    return text;
}

static size_t put_extension(uint8_t *buffer, size_t offset, uint32_t type, const void *data, uint32_t length)
{
    qcow2_put_be32(buffer + offset, type);
    qcow2_put_be32(buffer + offset + 4, length);
    memcpy(buffer + offset + 8, data, length);
    return offset + 8 + ((length + 7u) & ~7u);
}

static size_t extension_space(uint32_t length) { return 8 + ((length + 7u) & ~(size_t)7); }

int qcow2_image_header_encode(const struct qcow2_image_header *image, uint8_t *buffer, size_t capacity)
{
    const struct qcow2_header *h = &image->header;
    size_t header_length = h->version >= 3 ? QCOW2_V3_HEADER_LENGTH : QCOW2_V2_HEADER_LENGTH;
    size_t backing_format_length = image->backing_format ? strlen(image->backing_format) : 0;
    size_t data_file_length = image->data_file ? strlen(image->data_file) : 0;
    size_t backing_length = image->backing_file ? strlen(image->backing_file) : 0;
    if (backing_length > QCOW2_MAX_BACKING_NAME || backing_format_length > 15 || data_file_length > 4095)
        return -EINVAL;

    size_t needed = header_length + 8 + backing_length;
    if (image->backing_format)
        needed += extension_space((uint32_t)backing_format_length);
    if (image->data_file)
        needed += extension_space((uint32_t)data_file_length);
    if (image->feature_name_count)
        needed += extension_space((uint32_t)(image->feature_name_count * 48));
    for (size_t i = 0; i < image->extension_count; i++)
        needed += extension_space(image->extensions[i].length);
    if (needed > capacity)
        return -ENOSPC;

    memset(buffer, 0, capacity);
    qcow2_put_be32(buffer, QCOW2_MAGIC);
    qcow2_put_be32(buffer + 4, h->version);
    qcow2_put_be32(buffer + 20, h->cluster_bits);
    qcow2_put_be64(buffer + 24, h->size);
    qcow2_put_be32(buffer + 32, h->crypt_method);
    qcow2_put_be32(buffer + 36, h->l1_size);
    qcow2_put_be64(buffer + 40, h->l1_table_offset);
    qcow2_put_be64(buffer + 48, h->refcount_table_offset);
    qcow2_put_be32(buffer + 56, h->refcount_table_clusters);
    qcow2_put_be32(buffer + 60, h->nb_snapshots);
    qcow2_put_be64(buffer + 64, h->snapshots_offset);
    if (h->version >= 3) {
        qcow2_put_be64(buffer + 72, h->incompatible_features);
        qcow2_put_be64(buffer + 80, h->compatible_features);
        qcow2_put_be64(buffer + 88, h->autoclear_features);
        qcow2_put_be32(buffer + 96, h->refcount_order);
        qcow2_put_be32(buffer + 100, (uint32_t)header_length);
        buffer[104] = h->compression_type;
    }

    size_t offset = header_length;
    if (image->data_file)
        offset = put_extension(buffer, offset, QCOW2_EXT_DATA_FILE, image->data_file, (uint32_t)data_file_length);
    if (image->backing_format)
        offset = put_extension(buffer, offset, QCOW2_EXT_BACKING_FORMAT, image->backing_format,
                               (uint32_t)backing_format_length);
    if (image->feature_name_count) {
        qcow2_put_be32(buffer + offset, QCOW2_EXT_FEATURE_TABLE);
        qcow2_put_be32(buffer + offset + 4, (uint32_t)(image->feature_name_count * 48));
        offset += 8;
        for (size_t i = 0; i < image->feature_name_count; i++, offset += 48) {
            buffer[offset] = image->feature_names[i].type;
            buffer[offset + 1] = image->feature_names[i].bit;
            /* A 46-byte field, NUL-padded but not NUL-terminated when full. */
            memcpy(buffer + offset + 2, image->feature_names[i].name, strnlen(image->feature_names[i].name, 46));
        }
    }
    for (size_t i = 0; i < image->extension_count; i++)
        offset = put_extension(buffer, offset, image->extensions[i].type, image->extensions[i].data,
                               image->extensions[i].length);
    offset += 8; /* end marker: zeroes */

    if (image->backing_file) {
        memcpy(buffer + offset, image->backing_file, backing_length);
        qcow2_put_be64(buffer + 8, offset);
        qcow2_put_be32(buffer + 16, (uint32_t)backing_length);
    }
    return 0;
}

/*
 * Whether an L2 entry names a host cluster.  Offset 0 normally means none,
 * but it is a real offset in an external data file, where every cluster has
 * refcount 1: there the COPIED flag tells the two apart (as the spec says).
 */
bool qcow2_l2_entry_has_host(const struct qcow2_header *header, uint64_t entry)
{
    if (entry & QCOW2_OFFSET_MASK)
        return true;
    return (header->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) && (entry & QCOW2_OFLAG_COPIED);
}

int qcow2_l2_entry_kind(const struct qcow2_header *header, uint64_t entry, uint64_t bitmap,
                        unsigned subcluster, enum qcow2_cluster_kind *kind)
{
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        /* Compressed clusters have no COPIED flag and no subclusters, and no place in a data file. */
        if ((entry & QCOW2_OFLAG_COPIED) || bitmap || (header->incompatible_features & QCOW2_INCOMPAT_DATA_FILE))
            return -EINVAL;
        *kind = QCOW2_CLUSTER_COMPRESSED;
        return 0;
    }
    bool host = qcow2_l2_entry_has_host(header, entry);
    if (header->incompatible_features & QCOW2_INCOMPAT_EXTENDED_L2) {
        if (entry & (QCOW2_L2_STANDARD_RESERVED_MASK | QCOW2_OFLAG_ZERO))
            return -EINVAL;
        uint32_t allocated = (uint32_t)bitmap, zero = (uint32_t)(bitmap >> 32);
        if (allocated & zero)
            return -EINVAL;
        if (allocated && !host)
            return -EINVAL;
        uint32_t bit = 1u << subcluster;
        if (allocated & bit)
            *kind = QCOW2_CLUSTER_NORMAL;
        else if (zero & bit)
            *kind = host ? QCOW2_CLUSTER_ZERO_ALLOC : QCOW2_CLUSTER_ZERO_PLAIN;
        else
            *kind = QCOW2_CLUSTER_UNALLOCATED;
        return 0;
    }
    if (entry & QCOW2_L2_STANDARD_RESERVED_MASK)
        return -EINVAL;
    if (entry & QCOW2_OFLAG_ZERO) {
        if (header->version < 3)
            return -EINVAL;
        *kind = host ? QCOW2_CLUSTER_ZERO_ALLOC : QCOW2_CLUSTER_ZERO_PLAIN;
        return 0;
    }
    if (!host) {
        /* An unallocated cluster cannot be COPIED. */
        if (entry & QCOW2_OFLAG_COPIED)
            return -EINVAL;
        *kind = QCOW2_CLUSTER_UNALLOCATED;
        return 0;
    }
    *kind = QCOW2_CLUSTER_NORMAL;
    return 0;
}

/* Bits of a compressed descriptor that hold the host offset. */
static unsigned compressed_offset_bits(const struct qcow2_header *header) { return 62 - (header->cluster_bits - 8); }

void qcow2_compressed_descriptor(const struct qcow2_header *header, uint64_t entry, uint64_t *host_offset,
                                 uint64_t *length)
{
    unsigned bits = compressed_offset_bits(header);
    uint64_t descriptor = entry & ~(QCOW2_OFLAG_COPIED | QCOW2_OFLAG_COMPRESSED);
    *host_offset = descriptor & ((1ull << bits) - 1);
    uint64_t extra_sectors = descriptor >> bits;
    /*
     * The sector count covers the sectors the data touches, counted from
     * the one holding its first byte, so the data ends before that span
     * does.
     */
    uint64_t span = (extra_sectors + 1) * QCOW2_COMPRESSED_SECTOR;
    *length = span - (*host_offset & (QCOW2_COMPRESSED_SECTOR - 1));
}

uint64_t qcow2_compressed_entry(const struct qcow2_header *header, uint64_t host_offset, uint64_t length)
{
    unsigned bits = compressed_offset_bits(header);
    uint64_t first_sector = host_offset / QCOW2_COMPRESSED_SECTOR;
    uint64_t last_sector = (host_offset + length - 1) / QCOW2_COMPRESSED_SECTOR;
    return QCOW2_OFLAG_COMPRESSED | ((last_sector - first_sector) << bits) | host_offset;
}

size_t qcow2_snapshot_entry_size(const uint8_t *fixed)
{
    uint32_t extra = qcow2_be32(fixed + 36);
    if (extra > QCOW2_SNAPSHOT_EXTRA_MAX)
        return 0;
    return QCOW2_SNAPSHOT_FIXED_SIZE + extra + qcow2_be16(fixed + 12) + qcow2_be16(fixed + 14);
}

int qcow2_snapshot_decode(const uint8_t *buffer, size_t length, struct qcow2_snapshot *out, size_t *next)
{
    memset(out, 0, sizeof(*out));
    if (length < QCOW2_SNAPSHOT_FIXED_SIZE)
        return -EINVAL;
    size_t size = qcow2_snapshot_entry_size(buffer);
    if (size == 0 || size > length)
        return -EINVAL;
    uint16_t id_length = qcow2_be16(buffer + 12), name_length = qcow2_be16(buffer + 14);
    const uint8_t *extra = buffer + QCOW2_SNAPSHOT_FIXED_SIZE;
    *out = (struct qcow2_snapshot){
        .l1_table_offset = qcow2_be64(buffer),
        .l1_size = qcow2_be32(buffer + 8),
        .date_sec = qcow2_be32(buffer + 16),
        .date_nsec = qcow2_be32(buffer + 20),
        .vm_clock_nsec = qcow2_be64(buffer + 24),
        .vm_state_size = qcow2_be32(buffer + 32),
        .icount = UINT64_MAX,
        .disk_size = UINT64_MAX,
        .extra_data_size = qcow2_be32(buffer + 36),
    };
    if (out->extra_data_size >= 8)
        out->vm_state_size = qcow2_be64(extra);
    if (out->extra_data_size >= 16)
        out->disk_size = qcow2_be64(extra + 8);
    if (out->extra_data_size >= 24)
        out->icount = qcow2_be64(extra + 16);
    out->id = strndup((const char *)extra + out->extra_data_size, id_length);
    out->name = strndup((const char *)extra + out->extra_data_size + id_length, name_length);
    if (!out->id || !out->name) {
        qcow2_snapshot_clear(out);
        return -ENOMEM;
    }
    *next = (size + 7) & ~(size_t)7;
    return 0;
}

void qcow2_snapshot_clear(struct qcow2_snapshot *snapshot)
{
    free(snapshot->id);
    free(snapshot->name);
    snapshot->id = snapshot->name = NULL;
}

char *qcow2_backing_path(const char *image_path, const char *backing)
{
    const char *slash = strrchr(image_path, '/');
    if (backing[0] == '/' || !slash)
        return strdup(backing);
    char *path = NULL;
    return asprintf(&path, "%.*s/%s", (int)(slash - image_path), image_path, backing) < 0 ? NULL : path;
}

uint64_t qcow2_refcount_entry_get(const uint8_t *block, uint32_t refcount_bits, uint64_t index)
{
    switch (refcount_bits) {
    case 1:
    case 2:
    case 4: {
        uint64_t bit = index * refcount_bits;
        return (block[bit / 8] >> (bit % 8)) & ((1u << refcount_bits) - 1);
    }
    case 8:
        return block[index];
    case 16:
        return qcow2_be16(block + index * 2);
    case 32:
        return qcow2_be32(block + index * 4);
    default:
        return qcow2_be64(block + index * 8);
    }
}

void qcow2_refcount_entry_set(uint8_t *block, uint32_t refcount_bits, uint64_t index, uint64_t value)
{
    switch (refcount_bits) {
    case 1:
    case 2:
    case 4: {
        uint64_t bit = index * refcount_bits;
        uint8_t mask = (uint8_t)(((1u << refcount_bits) - 1) << (bit % 8));
        block[bit / 8] = (uint8_t)((block[bit / 8] & ~mask) | ((value << (bit % 8)) & mask));
        break;
    }
    case 8:
        block[index] = (uint8_t)value;
        break;
    case 16:
        qcow2_put_be16(block + index * 2, (uint16_t)value);
        break;
    case 32:
        qcow2_put_be32(block + index * 4, (uint32_t)value);
        break;
    default:
        qcow2_put_be64(block + index * 8, value);
        break;
    }
}

int qcow2_image_header_read(qcow2_read_fn *read, void *opaque, uint64_t file_size, struct qcow2_image_header *out,
                            char **reason)
{
    memset(out, 0, sizeof(*out));
    uint8_t first[QCOW2_V3_HEADER_LENGTH] = {0};
    size_t first_length = file_size < sizeof(first) ? (size_t)file_size : sizeof(first);
    struct qcow2_header header;
    int rc = first_length ? read(opaque, first, first_length, 0) : 0;
    if (rc == 0)
        rc = qcow2_header_decode(first, first_length, file_size, &header, reason);
    if (rc < 0)
        return rc;
    size_t length = qcow2_image_header_bytes(&header);
    if (length > file_size)
        length = (size_t)file_size;
    uint8_t *buffer = malloc(length);
    if (!buffer)
        return -ENOMEM;
    rc = read(opaque, buffer, length, 0);
    if (rc == 0)
        rc = qcow2_image_header_decode(buffer, length, file_size, out, reason);
    free(buffer);
    return rc;
}
