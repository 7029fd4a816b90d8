/*
 * qcow2_format: the on-disk layout of a qcow2 image (QEMU's
 * docs/interop/qcow2.txt), decoded and encoded without doing any I/O.
 *
 * Everything that reads bytes an attacker may have written starts here:
 * the header and its extensions are validated as they are decoded, and the
 * table-entry helpers below only split bits; callers check the offsets they
 * get against the file before using them.  Pure functions, so the driver,
 * luna-img and the fuzzer share them.
 */
#ifndef LUNA_BLOCK_QCOW2_FORMAT_H
#define LUNA_BLOCK_QCOW2_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */
#define QCOW2_V2_HEADER_LENGTH 72u
#define QCOW2_V3_MIN_HEADER_LENGTH 104u
#define QCOW2_V3_HEADER_LENGTH 112u /* with compression_type and padding, as QEMU writes it */
#define QCOW2_MIN_CLUSTER_BITS 9u
#define QCOW2_MAX_CLUSTER_BITS 21u  /* 2 MiB: QEMU's limit */
#define QCOW2_MAX_BACKING_NAME 1023u
#define QCOW2_MAX_L1_BYTES (32u << 20)      /* QEMU's limits, so what QEMU opens we open */
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_COMPRESSED_SECTOR 512u

#define QCOW2_INCOMPAT_DIRTY (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTENDED_L2 (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN 0x1full
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)

#define QCOW2_COMPRESSION_ZLIB 0u
#define QCOW2_COMPRESSION_ZSTD 1u

#define QCOW2_EXT_END 0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_CRYPTO 0x0537be77u
#define QCOW2_EXT_DATA_FILE 0x44415441u

/* L1 and L2 entries. */
#define QCOW2_OFFSET_MASK 0x00fffffffffffe00ull /* bits 9-55 */
#define QCOW2_OFLAG_COPIED (1ull << 63)         /* refcount is exactly 1: write in place */
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO (1ull << 0)            /* v3 standard cluster: reads as zeroes */
#define QCOW2_L1_RESERVED_MASK 0x7f000000000001ffull
#define QCOW2_L2_STANDARD_RESERVED_MASK 0x3f000000000001feull
#define QCOW2_REFTABLE_RESERVED_MASK 0x1ffull

/* Extended L2: 32 subclusters per cluster. */
#define QCOW2_SUBCLUSTERS 32u

/* The fixed header, in host byte order. */
struct qcow2_header {
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
};

struct qcow2_feature_name {
    uint8_t type; /* 0 incompatible, 1 compatible, 2 autoclear */
    uint8_t bit;
    char name[47]; /* NUL-terminated */
};

/* A header extension luna does not interpret; kept byte for byte on rewrite. */
struct qcow2_extension {
    uint32_t type;
    uint32_t length;
    uint8_t *data;
};

/* The header with its extensions and backing name: what the first cluster holds. */
struct qcow2_image_header {
    struct qcow2_header header;
    char *backing_file;   /* NULL when none */
    char *backing_format; /* NULL when none */
    char *data_file;      /* external data file name; NULL when none */
    struct qcow2_feature_name *feature_names;
    size_t feature_name_count;
    struct qcow2_extension *extensions; /* unknown, bitmaps, crypto: preserved */
    size_t extension_count;
};

static inline uint64_t qcow2_cluster_size(const struct qcow2_header *header)
{
    return 1ull << header->cluster_bits;
}

/* Bytes of an L2 entry: 8, or 16 with extended L2. */
static inline uint32_t qcow2_l2_entry_size(const struct qcow2_header *header)
{
    return (header->incompatible_features & QCOW2_INCOMPAT_EXTENDED_L2) ? 16u : 8u;
}

/*
 * Decode and validate the fixed header from the first bytes of the file
 * (at least QCOW2_V2_HEADER_LENGTH; for v3 at least header_length, which
 * the caller learns from a first call).  file_size bounds the tables.
 * 0, or -EINVAL (not qcow2 or malformed), -ENOTSUP (valid but beyond what
 * luna handles: version, encryption, unknown incompatible features) with a
 * message naming the field.  Does not check the feature bits' meaning for
 * opening read-write: that is the driver's call.
 */
int qcow2_header_decode(const uint8_t *buffer, size_t length, uint64_t file_size, struct qcow2_header *out,
                        char **error_message);

/*
 * How many bytes from the start of the file qcow2_image_header_decode
 * needs: the header, the extension area (up to the end of the first
 * cluster) and the backing file name.
 */
size_t qcow2_image_header_bytes(const struct qcow2_header *header);

/*
 * Decode the header, the extensions and the backing name from the first
 * qcow2_image_header_bytes() bytes (fewer if the file is shorter: then
 * what is missing is an error).  On success the caller owns out and frees
 * it with qcow2_image_header_clear.
 */
int qcow2_image_header_decode(const uint8_t *buffer, size_t length, uint64_t file_size,
                              struct qcow2_image_header *out, char **error_message);

/*
 * Encode into buffer (capacity bytes, normally one cluster): the header,
 * the extensions (backing format, data file, feature names, preserved
 * ones), the end marker and the backing name; the rest of buffer is
 * zeroed.  header_length, backing_file_offset and backing_file_size are
 * derived.  -ENOSPC when it does not fit.
 */
int qcow2_image_header_encode(const struct qcow2_image_header *image, uint8_t *buffer, size_t capacity);

void qcow2_image_header_clear(struct qcow2_image_header *image);

/* Reads length bytes at offset of the image file into buffer: 0 or -errno. */
typedef int qcow2_read_fn(void *opaque, void *buffer, size_t length, uint64_t offset);

/*
 * Read and decode the whole image header through read: the fixed header
 * first, then the bytes it says the rest needs (never past file_size).
 * 0, or -errno with *reason as qcow2_image_header_decode (NULL on a read
 * error, which read reports).
 */
int qcow2_image_header_read(qcow2_read_fn *read, void *opaque, uint64_t file_size, struct qcow2_image_header *out,
                            char **reason);

/* The feature-name table QEMU writes, for images luna creates or rewrites. */
int qcow2_image_header_set_default_feature_names(struct qcow2_image_header *image);

/*
 * Comma-separated names of the incompatible feature bits in mask, using the
 * image's feature-name table for bits luna does not know ("unknown bit N"
 * otherwise).  Malloc'd; NULL on allocation failure.
 */
char *qcow2_feature_names_describe(const struct qcow2_image_header *image, uint64_t mask);

/* One snapshot table entry (the spec's "Snapshots"), in host byte order. */
struct qcow2_snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size; /* the 64-bit size from the extra data when present */
    uint64_t icount;        /* UINT64_MAX when the entry does not record it */
    uint64_t disk_size;     /* the virtual size when taken; UINT64_MAX when the entry does not record it */
    uint32_t extra_data_size;
    char *id;
    char *name;
};

#define QCOW2_SNAPSHOT_FIXED_SIZE 40u   /* bytes before the extra data */
#define QCOW2_SNAPSHOT_EXTRA_MAX 1024u  /* QEMU's limit on extra data */

/*
 * The size of the entry whose first QCOW2_SNAPSHOT_FIXED_SIZE bytes are
 * fixed (without padding), so a reader knows how much to read; 0 when its
 * extra data exceeds QCOW2_SNAPSHOT_EXTRA_MAX.
 */
size_t qcow2_snapshot_entry_size(const uint8_t *fixed);

/*
 * Decode the entry in buffer (length bytes, at least its entry size).  On
 * success the caller frees it with qcow2_snapshot_clear; *next receives
 * the offset of the following entry (the size rounded up to 8).  -EINVAL
 * when truncated or its extra data is too large, -ENOMEM.
 */
int qcow2_snapshot_decode(const uint8_t *buffer, size_t length, struct qcow2_snapshot *out, size_t *next);
void qcow2_snapshot_clear(struct qcow2_snapshot *snapshot);

/*
 * Entry index of a refcount block of refcount_bits-wide entries (1 to 64):
 * big-endian from 8 bits up, packed low bits first below (as QEMU does).
 */
uint64_t qcow2_refcount_entry_get(const uint8_t *block, uint32_t refcount_bits, uint64_t index);
void qcow2_refcount_entry_set(uint8_t *block, uint32_t refcount_bits, uint64_t index, uint64_t value);

/*
 * Where a backing file name points: as it is when absolute, else relative
 * to the image's directory (QEMU's path_combine: "base.raw" beside
 * "vm.qcow2" stays "base.raw").  Malloc'd; NULL without memory.
 */
char *qcow2_backing_path(const char *image_path, const char *backing);

/* What a guest cluster (or, with extended L2, a subcluster) is. */
enum qcow2_cluster_kind {
    QCOW2_CLUSTER_UNALLOCATED, /* read through to the backing file, or zeroes */
    QCOW2_CLUSTER_ZERO_PLAIN,  /* reads as zeroes, no host cluster */
    QCOW2_CLUSTER_ZERO_ALLOC,  /* reads as zeroes, host cluster kept (preallocated) */
    QCOW2_CLUSTER_NORMAL,      /* data at the host offset */
    QCOW2_CLUSTER_COMPRESSED,  /* compressed data at the host offset */
};

/*
 * Classify an L2 entry (bitmap: the extended-L2 word, 0 otherwise) for the
 * subcluster index given (0 without extended L2).  -EINVAL when reserved
 * bits are set or the combination is impossible (for instance an
 * allocated subcluster without a host cluster).
 */
int qcow2_l2_entry_kind(const struct qcow2_header *header, uint64_t entry, uint64_t bitmap,
                        unsigned subcluster, enum qcow2_cluster_kind *kind);

/* Whether an L2 entry names a host cluster (offset 0 is one in an external data file, flagged COPIED). */
bool qcow2_l2_entry_has_host(const struct qcow2_header *header, uint64_t entry);

/* Host offset and size in bytes of a compressed cluster's data. */
void qcow2_compressed_descriptor(const struct qcow2_header *header, uint64_t entry, uint64_t *host_offset,
                                 uint64_t *length);
/* The L2 entry (without flags) for compressed data at host_offset of length bytes. */
uint64_t qcow2_compressed_entry(const struct qcow2_header *header, uint64_t host_offset, uint64_t length);

/* Big-endian helpers. */
static inline uint64_t qcow2_be64(const uint8_t *p)
{
    return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) | ((uint64_t)p[3] << 32) |
           ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) | ((uint64_t)p[6] << 8) | p[7];
}
static inline uint32_t qcow2_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint16_t qcow2_be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline void qcow2_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline void qcow2_put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline void qcow2_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

#endif
