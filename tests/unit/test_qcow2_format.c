/*
 * Unit tests for block/qcow2/qcow2_format.c: decoding headers qemu-img
 * wrote, encode/decode round trips, every rejection with its message, L2
 * entry classification and compressed-cluster descriptors.
 *
 * The qemu_* arrays are the first bytes of images made with qemu-img 7.2
 * (the command is above each); the tests copy them into a zeroed first
 * cluster and pass the real file size.  Where only the fixed header is
 * kept, the zeroes after it read as the end of the extensions.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2/qcow2_format.h"

/* qemu-img create -f qcow2 v3.qcow2 1M: header, feature table, end (196616 bytes) */
static const uint8_t qemu_v3_default[] = {
    0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x70, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x68, 0x03, 0xf8, 0x57, 0x00, 0x00, 0x01, 0x80, 0x00, 0x00, 0x64, 0x69, 0x72, 0x74, 0x79, 0x20,
    0x62, 0x69, 0x74, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x63, 0x6f, 0x72, 0x72, 0x75, 0x70,
    0x74, 0x20, 0x62, 0x69, 0x74, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x65, 0x78, 0x74, 0x65, 0x72, 0x6e,
    0x61, 0x6c, 0x20, 0x64, 0x61, 0x74, 0x61, 0x20, 0x66, 0x69, 0x6c, 0x65, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x63, 0x6f, 0x6d, 0x70, 0x72, 0x65,
    0x73, 0x73, 0x69, 0x6f, 0x6e, 0x20, 0x74, 0x79, 0x70, 0x65, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x65, 0x78, 0x74, 0x65, 0x6e, 0x64,
    0x65, 0x64, 0x20, 0x4c, 0x32, 0x20, 0x65, 0x6e, 0x74, 0x72, 0x69, 0x65, 0x73, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x6c, 0x61, 0x7a, 0x79, 0x20, 0x72,
    0x65, 0x66, 0x63, 0x6f, 0x75, 0x6e, 0x74, 0x73, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x62, 0x69, 0x74, 0x6d, 0x61, 0x70,
    0x73, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x01, 0x72, 0x61, 0x77, 0x20, 0x65, 0x78,
    0x74, 0x65, 0x72, 0x6e, 0x61, 0x6c, 0x20, 0x64, 0x61, 0x74, 0x61, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
/* qemu-img create -f qcow2 -o compat=0.10 v2.qcow2 1M: the 72-byte header (196616 bytes) */
static const uint8_t qemu_v2[] = {
    0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
/* qemu-img create -f qcow2 -o cluster_size=512 c512.qcow2 1M: header, no room for a feature table (1792 bytes) */
static const uint8_t qemu_c512[] = {
    0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x70, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
/* qemu-img create -f qcow2 -o extended_l2=on el2.qcow2 1M: header only (196616 bytes) */
static const uint8_t qemu_extended_l2[] = {
    0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x70, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
/* qemu-img create -f qcow2 -o compression_type=zstd zstd.qcow2 1M: header only (196616 bytes) */
static const uint8_t qemu_zstd[] = {
    0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x70, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};
/* qemu-img create -f qcow2 -b back.raw -F raw back.qcow2 1M: header and backing format extension (196616 bytes);
 * the name "back.raw" is at 0x210, after the feature table (left out) */
static const uint8_t qemu_backing[] = {
    0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x10,
    0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x70, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xe2, 0x79, 0x2a, 0xca, 0x00, 0x00, 0x00, 0x03, 0x72, 0x61, 0x77, 0x00, 0x00, 0x00, 0x00, 0x00,
};

#define QEMU_FILE_SIZE 196616u /* every 64 KiB-cluster image above: header, refcount table and block, L1 */

/* A first cluster holding prefix (the rest zeroes); cluster_size bytes, malloc'd. */
static uint8_t *first_cluster(const uint8_t *prefix, size_t prefix_length, size_t cluster_size)
{
    uint8_t *buffer = calloc(1, cluster_size);
    cr_assert_not_null(buffer);
    memcpy(buffer, prefix, prefix_length);
    return buffer;
}

static void decode_ok(const uint8_t *buffer, size_t length, uint64_t file_size, struct qcow2_image_header *out)
{
    char *message = NULL;
    int rc = qcow2_image_header_decode(buffer, length, file_size, out, &message);
    cr_assert_eq(rc, 0, "decode failed: %d %s", rc, message ? message : "(no message)");
    cr_assert_null(message);
}

static void expect_feature(const struct qcow2_image_header *image, size_t index, uint8_t type, uint8_t bit,
                           const char *name)
{
    cr_assert_lt(index, image->feature_name_count);
    cr_expect_eq(image->feature_names[index].type, type, "feature %zu type", index);
    cr_expect_eq(image->feature_names[index].bit, bit, "feature %zu bit", index);
    cr_expect_str_eq(image->feature_names[index].name, name);
}

TestSuite(qcow2_format);

Test(qcow2_format, qemu_v3_default)
{
    uint8_t *buffer = first_cluster(qemu_v3_default, sizeof(qemu_v3_default), 65536);
    struct qcow2_image_header image;
    decode_ok(buffer, 65536, QEMU_FILE_SIZE, &image);
    const struct qcow2_header *h = &image.header;
    cr_expect_eq(h->version, 3);
    cr_expect_eq(h->backing_file_offset, 0);
    cr_expect_eq(h->backing_file_size, 0);
    cr_expect_eq(h->cluster_bits, 16);
    cr_expect_eq(h->size, 1u << 20);
    cr_expect_eq(h->crypt_method, 0);
    cr_expect_eq(h->l1_size, 1);
    cr_expect_eq(h->l1_table_offset, 0x30000);
    cr_expect_eq(h->refcount_table_offset, 0x10000);
    cr_expect_eq(h->refcount_table_clusters, 1);
    cr_expect_eq(h->nb_snapshots, 0);
    cr_expect_eq(h->snapshots_offset, 0);
    cr_expect_eq(h->incompatible_features, 0);
    cr_expect_eq(h->compatible_features, 0);
    cr_expect_eq(h->autoclear_features, 0);
    cr_expect_eq(h->refcount_order, 4);
    cr_expect_eq(h->header_length, 112);
    cr_expect_eq(h->compression_type, QCOW2_COMPRESSION_ZLIB);
    cr_expect_eq(qcow2_cluster_size(h), 65536);
    cr_expect_eq(qcow2_l2_entry_size(h), 8);
    cr_expect_eq(qcow2_image_header_bytes(h), 65536);
    cr_expect_null(image.backing_file);
    cr_expect_null(image.backing_format);
    cr_expect_null(image.data_file);
    cr_expect_eq(image.extension_count, 0);
    cr_assert_eq(image.feature_name_count, 8);
    expect_feature(&image, 0, 0, 0, "dirty bit");
    expect_feature(&image, 1, 0, 1, "corrupt bit");
    expect_feature(&image, 2, 0, 2, "external data file");
    expect_feature(&image, 3, 0, 3, "compression type");
    expect_feature(&image, 4, 0, 4, "extended L2 entries");
    expect_feature(&image, 5, 1, 0, "lazy refcounts");
    expect_feature(&image, 6, 2, 0, "bitmaps");
    expect_feature(&image, 7, 2, 1, "raw external data");
    qcow2_image_header_clear(&image);
    cr_expect_null(image.feature_names);
    free(buffer);
}

Test(qcow2_format, qemu_v3_fixed_header_alone)
{
    /* qcow2_header_decode needs only the first header_length bytes. */
    struct qcow2_header h;
    char *message = NULL;
    cr_assert_eq(qcow2_header_decode(qemu_v3_default, QCOW2_V3_HEADER_LENGTH, QEMU_FILE_SIZE, &h, &message), 0);
    cr_expect_eq(h.header_length, 112);
    cr_expect_eq(h.l1_table_offset, 0x30000);
    cr_expect_null(message);
}

Test(qcow2_format, qemu_compat_0_10)
{
    uint8_t *buffer = first_cluster(qemu_v2, sizeof(qemu_v2), 65536);
    struct qcow2_image_header image;
    decode_ok(buffer, 65536, QEMU_FILE_SIZE, &image);
    const struct qcow2_header *h = &image.header;
    cr_expect_eq(h->version, 2);
    cr_expect_eq(h->cluster_bits, 16);
    cr_expect_eq(h->size, 1u << 20);
    cr_expect_eq(h->l1_size, 1);
    cr_expect_eq(h->l1_table_offset, 0x30000);
    cr_expect_eq(h->refcount_table_offset, 0x10000);
    cr_expect_eq(h->refcount_table_clusters, 1);
    cr_expect_eq(h->nb_snapshots, 0);
    /* v2 has none of the v3 fields: their defaults. */
    cr_expect_eq(h->incompatible_features, 0);
    cr_expect_eq(h->compatible_features, 0);
    cr_expect_eq(h->autoclear_features, 0);
    cr_expect_eq(h->refcount_order, 4);
    cr_expect_eq(h->header_length, QCOW2_V2_HEADER_LENGTH);
    cr_expect_eq(h->compression_type, 0);
    cr_expect_null(image.backing_file);
    cr_expect_eq(image.feature_name_count, 0);
    cr_expect_eq(image.extension_count, 0);
    qcow2_image_header_clear(&image);
    free(buffer);
}

Test(qcow2_format, qemu_cluster_size_512)
{
    uint8_t *buffer = first_cluster(qemu_c512, sizeof(qemu_c512), 512);
    struct qcow2_image_header image;
    decode_ok(buffer, 512, 1792, &image);
    const struct qcow2_header *h = &image.header;
    cr_expect_eq(h->version, 3);
    cr_expect_eq(h->cluster_bits, 9);
    cr_expect_eq(h->size, 1u << 20);
    /* 64 entries of 512 bytes per L2 table: 32 KiB per L1 entry. */
    cr_expect_eq(h->l1_size, 32);
    cr_expect_eq(h->l1_table_offset, 0x600);
    cr_expect_eq(h->refcount_table_offset, 0x200);
    cr_expect_eq(h->refcount_table_clusters, 1);
    cr_expect_eq(h->refcount_order, 4);
    cr_expect_eq(h->header_length, 112);
    cr_expect_eq(h->incompatible_features, 0);
    cr_expect_eq(qcow2_image_header_bytes(h), 512);
    /* No room for a feature table in a 512-byte cluster: QEMU leaves it out. */
    cr_expect_eq(image.feature_name_count, 0);
    qcow2_image_header_clear(&image);
    free(buffer);
}

Test(qcow2_format, qemu_extended_l2)
{
    uint8_t *buffer = first_cluster(qemu_extended_l2, sizeof(qemu_extended_l2), 65536);
    struct qcow2_image_header image;
    decode_ok(buffer, 65536, QEMU_FILE_SIZE, &image);
    const struct qcow2_header *h = &image.header;
    cr_expect_eq(h->version, 3);
    cr_expect_eq(h->cluster_bits, 16);
    cr_expect_eq(h->incompatible_features, QCOW2_INCOMPAT_EXTENDED_L2);
    cr_expect_eq(h->compression_type, 0);
    cr_expect_eq(h->l1_size, 1);
    cr_expect_eq(h->header_length, 112);
    cr_expect_eq(qcow2_l2_entry_size(h), 16);
    qcow2_image_header_clear(&image);
    free(buffer);
}

Test(qcow2_format, qemu_compression_type_zstd)
{
    uint8_t *buffer = first_cluster(qemu_zstd, sizeof(qemu_zstd), 65536);
    struct qcow2_image_header image;
    decode_ok(buffer, 65536, QEMU_FILE_SIZE, &image);
    cr_expect_eq(image.header.incompatible_features, QCOW2_INCOMPAT_COMPRESSION);
    cr_expect_eq(image.header.compression_type, QCOW2_COMPRESSION_ZSTD);
    cr_expect_eq(image.header.header_length, 112);
    cr_expect_eq(qcow2_l2_entry_size(&image.header), 8);
    qcow2_image_header_clear(&image);
    free(buffer);
}

Test(qcow2_format, qemu_backing_raw)
{
    uint8_t *buffer = first_cluster(qemu_backing, sizeof(qemu_backing), 65536);
    memcpy(buffer + 0x210, "back.raw", 8);
    struct qcow2_image_header image;
    decode_ok(buffer, 65536, QEMU_FILE_SIZE, &image);
    const struct qcow2_header *h = &image.header;
    cr_expect_eq(h->backing_file_offset, 0x210);
    cr_expect_eq(h->backing_file_size, 8);
    cr_expect_eq(h->size, 1u << 20);
    cr_expect_eq(h->l1_size, 1);
    cr_assert_not_null(image.backing_file);
    cr_expect_str_eq(image.backing_file, "back.raw");
    cr_assert_not_null(image.backing_format);
    cr_expect_str_eq(image.backing_format, "raw");
    cr_expect_eq(image.extension_count, 0);
    cr_expect_eq(qcow2_image_header_bytes(h), 65536);
    qcow2_image_header_clear(&image);
    free(buffer);
}

Test(qcow2_format, truncated_image)
{
    /* Fewer bytes than the first cluster: the header area is missing. */
    char *message = NULL;
    struct qcow2_image_header image;
    cr_expect_eq(qcow2_image_header_decode(qemu_v3_default, sizeof(qemu_v3_default), QEMU_FILE_SIZE, &image,
                                           &message), -EINVAL);
    cr_expect_str_eq(message, "qcow2 image truncated inside its header");
    free(message);
    message = NULL;
    struct qcow2_header h;
    cr_expect_eq(qcow2_header_decode(qemu_v3_default, 100, QEMU_FILE_SIZE, &h, &message), -EINVAL);
    cr_expect_str_eq(message, "qcow2 header truncated");
    free(message);
}

/* ---- round trip ---- */

static uint8_t unknown_data[] = {'h', 'e', 'l', 'l', 'o'};
static uint8_t bitmaps_data[24] = {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0};

/* A v3 image with everything the encoder writes. */
static void full_image(struct qcow2_image_header *image)
{
    memset(image, 0, sizeof(*image));
    image->header = (struct qcow2_header){
        .version = 3,
        .cluster_bits = 16,
        .size = 10ull << 30,
        .l1_size = 40, /* 256 MiB per entry with extended L2 */
        .l1_table_offset = 0x30000,
        .refcount_table_offset = 0x10000,
        .refcount_table_clusters = 1,
        .nb_snapshots = 2,
        .snapshots_offset = 0x50000,
        .incompatible_features = QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTENDED_L2,
        .compatible_features = QCOW2_COMPAT_LAZY_REFCOUNTS,
        .autoclear_features = QCOW2_AUTOCLEAR_BITMAPS,
        .refcount_order = 5,
        .compression_type = QCOW2_COMPRESSION_ZSTD,
    };
    image->backing_file = strdup("../images/base image.qcow2");
    image->backing_format = strdup("qcow2");
    image->data_file = strdup("data.raw");
    cr_assert_eq(qcow2_image_header_set_default_feature_names(image), 0);
    image->extensions = calloc(2, sizeof(*image->extensions));
    image->extensions[0] = (struct qcow2_extension){QCOW2_EXT_BITMAPS, sizeof(bitmaps_data), NULL};
    image->extensions[0].data = malloc(sizeof(bitmaps_data));
    memcpy(image->extensions[0].data, bitmaps_data, sizeof(bitmaps_data));
    image->extensions[1] = (struct qcow2_extension){0x12345678u, sizeof(unknown_data), NULL};
    image->extensions[1].data = malloc(sizeof(unknown_data));
    memcpy(image->extensions[1].data, unknown_data, sizeof(unknown_data));
    image->extension_count = 2;
}

Test(qcow2_format, encode_decode_round_trip)
{
    struct qcow2_image_header image, decoded;
    full_image(&image);
    uint8_t *buffer = malloc(65536);
    memset(buffer, 0xee, 65536);
    cr_assert_eq(qcow2_image_header_encode(&image, buffer, 65536), 0);
    cr_expect_eq(qcow2_be32(buffer), QCOW2_MAGIC);
    cr_expect_eq(qcow2_be32(buffer + 100), QCOW2_V3_HEADER_LENGTH);
    decode_ok(buffer, 65536, 1ull << 30, &decoded);

    const struct qcow2_header *a = &image.header, *b = &decoded.header;
    cr_expect_eq(b->version, a->version);
    cr_expect_eq(b->cluster_bits, a->cluster_bits);
    cr_expect_eq(b->size, a->size);
    cr_expect_eq(b->crypt_method, 0);
    cr_expect_eq(b->l1_size, a->l1_size);
    cr_expect_eq(b->l1_table_offset, a->l1_table_offset);
    cr_expect_eq(b->refcount_table_offset, a->refcount_table_offset);
    cr_expect_eq(b->refcount_table_clusters, a->refcount_table_clusters);
    cr_expect_eq(b->nb_snapshots, a->nb_snapshots);
    cr_expect_eq(b->snapshots_offset, a->snapshots_offset);
    cr_expect_eq(b->incompatible_features, a->incompatible_features);
    cr_expect_eq(b->compatible_features, a->compatible_features);
    cr_expect_eq(b->autoclear_features, a->autoclear_features);
    cr_expect_eq(b->refcount_order, a->refcount_order);
    cr_expect_eq(b->compression_type, a->compression_type);
    /* Derived by the encoder. */
    cr_expect_eq(b->header_length, QCOW2_V3_HEADER_LENGTH);
    cr_expect_eq(b->backing_file_size, strlen(image.backing_file));
    cr_expect_gt(b->backing_file_offset, QCOW2_V3_HEADER_LENGTH);
    cr_expect_str_eq(decoded.backing_file, image.backing_file);
    cr_expect_str_eq(decoded.backing_format, image.backing_format);
    cr_expect_str_eq(decoded.data_file, image.data_file);
    cr_assert_eq(decoded.feature_name_count, image.feature_name_count);
    for (size_t i = 0; i < image.feature_name_count; i++)
        expect_feature(&decoded, i, image.feature_names[i].type, image.feature_names[i].bit,
                       image.feature_names[i].name);
    /* Unknown extensions come back byte for byte, in order. */
    cr_assert_eq(decoded.extension_count, 2);
    for (size_t i = 0; i < 2; i++) {
        cr_expect_eq(decoded.extensions[i].type, image.extensions[i].type);
        cr_assert_eq(decoded.extensions[i].length, image.extensions[i].length);
        cr_expect_arr_eq(decoded.extensions[i].data, image.extensions[i].data, image.extensions[i].length);
    }
    /* Everything after the backing name is zeroed. */
    size_t end = b->backing_file_offset + b->backing_file_size;
    for (size_t i = end; i < 65536; i++)
        cr_assert_eq(buffer[i], 0, "byte %zu not cleared", i);

    /* And encoding the decoded header gives the same bytes. */
    uint8_t *again = malloc(65536);
    cr_assert_eq(qcow2_image_header_encode(&decoded, again, 65536), 0);
    cr_expect_arr_eq(again, buffer, 65536);
    free(again);
    qcow2_image_header_clear(&decoded);
    qcow2_image_header_clear(&image);
    free(buffer);
}

Test(qcow2_format, encode_decode_v2)
{
    struct qcow2_image_header image = {0}, decoded;
    image.header = (struct qcow2_header){.version = 2, .cluster_bits = 12, .size = 1 << 20, .l1_size = 2,
                                         .l1_table_offset = 0x2000, .refcount_table_offset = 0x1000,
                                         .refcount_table_clusters = 1, .refcount_order = 4};
    image.backing_file = strdup("/srv/base.raw");
    uint8_t buffer[4096];
    cr_assert_eq(qcow2_image_header_encode(&image, buffer, sizeof(buffer)), 0);
    /* v2: the name right after the 72-byte header and the end marker. */
    cr_expect_eq(qcow2_be64(buffer + 8), QCOW2_V2_HEADER_LENGTH + 8);
    decode_ok(buffer, sizeof(buffer), 16384, &decoded);
    cr_expect_eq(decoded.header.version, 2);
    cr_expect_eq(decoded.header.header_length, QCOW2_V2_HEADER_LENGTH);
    cr_expect_eq(decoded.header.l1_size, 2);
    cr_expect_str_eq(decoded.backing_file, "/srv/base.raw");
    cr_expect_null(decoded.backing_format);
    qcow2_image_header_clear(&decoded);
    qcow2_image_header_clear(&image);
}

Test(qcow2_format, encode_does_not_fit)
{
    struct qcow2_image_header image;
    full_image(&image);
    /* header 112, data file 8+8, backing format 8+8, features 8+384, bitmaps 8+24, unknown 8+8, end 8, name 26. */
    size_t needed = 112 + 16 + 16 + 392 + 32 + 16 + 8 + strlen(image.backing_file);
    uint8_t *buffer = malloc(needed);
    memset(buffer, 0xee, needed);
    cr_expect_eq(qcow2_image_header_encode(&image, buffer, needed - 1), -ENOSPC);
    cr_expect_eq(buffer[0], 0xee, "nothing written when it does not fit");
    cr_expect_eq(qcow2_image_header_encode(&image, buffer, needed), 0);
    cr_expect_eq(qcow2_be32(buffer + 16), strlen(image.backing_file));
    cr_expect_eq(qcow2_be64(buffer + 8), needed - strlen(image.backing_file));
    /* A 512-byte cluster cannot hold the feature table: the caller must drop it. */
    cr_expect_eq(qcow2_image_header_encode(&image, buffer, 512), -ENOSPC);
    free(buffer);
    qcow2_image_header_clear(&image);
}

Test(qcow2_format, encode_rejects_long_names)
{
    struct qcow2_image_header image = {0};
    image.header = (struct qcow2_header){.version = 3, .cluster_bits = 16, .refcount_order = 4};
    image.backing_file = malloc(1025);
    memset(image.backing_file, 'a', 1024);
    image.backing_file[1024] = '\0';
    uint8_t *buffer = malloc(65536);
    cr_expect_eq(qcow2_image_header_encode(&image, buffer, 65536), -EINVAL);
    image.backing_file[1023] = '\0';
    cr_expect_eq(qcow2_image_header_encode(&image, buffer, 65536), 0);
    cr_expect_eq(qcow2_be32(buffer + 16), 1023);
    free(buffer);
    qcow2_image_header_clear(&image);
}

/* ---- rejections ---- */

#define CLUSTER 65536u
#define FILE_SIZE (4u * CLUSTER)

/* A valid v3 image's first cluster, as QEMU writes it (64 KiB clusters, 1 MiB disk, four clusters). */
static uint8_t *valid_header(void)
{
    return first_cluster(qemu_v3_default, sizeof(qemu_v3_default), CLUSTER);
}

static void expect_rejected(const uint8_t *buffer, uint64_t file_size, int code, const char *expected)
{
    struct qcow2_image_header image;
    char *message = NULL;
    int rc = qcow2_image_header_decode(buffer, CLUSTER, file_size, &image, &message);
    cr_expect_eq(rc, code, "rc %d, expected %d (%s)", rc, code, message ? message : "no message");
    cr_assert_not_null(message);
    cr_expect_str_eq(message, expected);
    free(message);
    /* Nothing to free after a failure. */
    cr_expect_null(image.feature_names);
    cr_expect_null(image.backing_file);
    cr_expect_null(image.extensions);
}

Test(qcow2_format, the_valid_header_decodes)
{
    uint8_t *b = valid_header();
    struct qcow2_image_header image;
    decode_ok(b, CLUSTER, FILE_SIZE, &image);
    qcow2_image_header_clear(&image);
    free(b);
}

Test(qcow2_format, bad_magic)
{
    uint8_t *b = valid_header();
    b[3] = 0xfc;
    expect_rejected(b, FILE_SIZE, -EINVAL, "not a qcow2 image (bad magic)");
    free(b);
    struct qcow2_header h;
    char *message = NULL;
    cr_expect_eq(qcow2_header_decode(qemu_v3_default, 71, FILE_SIZE, &h, &message), -EINVAL);
    cr_expect_str_eq(message, "not a qcow2 image (bad magic)");
    free(message);
}

Test(qcow2_format, versions_1_and_4)
{
    uint8_t *b = valid_header();
    qcow2_put_be32(b + 4, 1);
    expect_rejected(b, FILE_SIZE, -ENOTSUP, "unsupported qcow2 version 1");
    qcow2_put_be32(b + 4, 4);
    expect_rejected(b, FILE_SIZE, -ENOTSUP, "unsupported qcow2 version 4");
    free(b);
}

Test(qcow2_format, cluster_bits_8_and_22)
{
    uint8_t *b = valid_header();
    qcow2_put_be32(b + 20, 8);
    expect_rejected(b, FILE_SIZE, -EINVAL, "unsupported cluster size: cluster_bits 8 (9 to 21 allowed)");
    qcow2_put_be32(b + 20, 22);
    expect_rejected(b, FILE_SIZE, -EINVAL, "unsupported cluster size: cluster_bits 22 (9 to 21 allowed)");
    free(b);
}

Test(qcow2_format, encrypted)
{
    uint8_t *b = valid_header();
    qcow2_put_be32(b + 32, 1);
    expect_rejected(b, FILE_SIZE, -ENOTSUP, "encrypted qcow2 images (crypt_method 1) are not supported");
    qcow2_put_be32(b + 32, 2);
    expect_rejected(b, FILE_SIZE, -ENOTSUP, "encrypted qcow2 images (crypt_method 2) are not supported");
    free(b);
}

Test(qcow2_format, header_length_not_a_multiple_of_8)
{
    uint8_t *b = valid_header();
    qcow2_put_be32(b + 100, 108);
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid qcow2 header_length 108");
    qcow2_put_be32(b + 100, 96);
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid qcow2 header_length 96");
    free(b);
}

Test(qcow2_format, refcount_order_7)
{
    uint8_t *b = valid_header();
    qcow2_put_be32(b + 96, 7);
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid refcount_order 7 (at most 6)");
    qcow2_put_be32(b + 96, 6);
    struct qcow2_image_header image;
    decode_ok(b, CLUSTER, FILE_SIZE, &image);
    qcow2_image_header_clear(&image);
    free(b);
}

Test(qcow2_format, extended_l2_with_4k_clusters)
{
    uint8_t *b = valid_header();
    qcow2_put_be64(b + 72, QCOW2_INCOMPAT_EXTENDED_L2);
    /* 4 KiB clusters: tables at cluster-aligned offsets inside the file still. */
    qcow2_put_be32(b + 20, 12);
    expect_rejected(b, FILE_SIZE, -EINVAL, "extended L2 entries need clusters of at least 16 KiB");
    qcow2_put_be32(b + 20, 14);
    struct qcow2_image_header image;
    decode_ok(b, CLUSTER, FILE_SIZE, &image);
    qcow2_image_header_clear(&image);
    free(b);
}

Test(qcow2_format, compression_bit_and_type_disagree)
{
    uint8_t *b = valid_header();
    qcow2_put_be64(b + 72, QCOW2_INCOMPAT_COMPRESSION);
    b[104] = 0;
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid compression_type 0 for its feature bit");
    qcow2_put_be64(b + 72, 0);
    b[104] = QCOW2_COMPRESSION_ZSTD;
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid compression_type 1 for its feature bit");
    qcow2_put_be64(b + 72, QCOW2_INCOMPAT_COMPRESSION);
    b[104] = 2;
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid compression_type 2 for its feature bit");
    free(b);
}

Test(qcow2_format, l1_table_too_small)
{
    uint8_t *b = valid_header();
    /* One L1 entry of 64 KiB clusters maps 8192 x 64 KiB = 512 MiB. */
    qcow2_put_be64(b + 24, (512ull << 20) + 1);
    expect_rejected(b, FILE_SIZE, -EINVAL, "L1 table too small for the virtual size");
    qcow2_put_be64(b + 24, 512ull << 20);
    struct qcow2_image_header image;
    decode_ok(b, CLUSTER, FILE_SIZE, &image);
    qcow2_image_header_clear(&image);
    /* Extended L2 entries are twice as large: half as much per L2 table. */
    qcow2_put_be64(b + 72, QCOW2_INCOMPAT_EXTENDED_L2);
    expect_rejected(b, FILE_SIZE, -EINVAL, "L1 table too small for the virtual size");
    free(b);
}

Test(qcow2_format, l1_table_past_the_end_or_unaligned)
{
    uint8_t *b = valid_header();
    qcow2_put_be64(b + 40, 4 * CLUSTER);
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid L1 table offset 0x40000");
    /* Starts inside the file, ends past it. */
    expect_rejected(b, FILE_SIZE + 7, -EINVAL, "invalid L1 table offset 0x40000");
    qcow2_put_be64(b + 40, 3 * CLUSTER + 512);
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid L1 table offset 0x30200");
    qcow2_put_be64(b + 40, UINT64_MAX & ~(uint64_t)(CLUSTER - 1));
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid L1 table offset 0xffffffffffff0000");
    free(b);
}

Test(qcow2_format, refcount_table_past_the_end_or_unaligned)
{
    uint8_t *b = valid_header();
    qcow2_put_be64(b + 48, 4 * CLUSTER);
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid refcount table offset 0x40000");
    qcow2_put_be64(b + 48, CLUSTER + 8);
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid refcount table offset 0x10008");
    qcow2_put_be64(b + 48, 3 * CLUSTER);
    qcow2_put_be32(b + 56, 2); /* two clusters from the last one */
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid refcount table offset 0x30000");
    qcow2_put_be32(b + 56, 0);
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid refcount table size (0 clusters)");
    free(b);
}

/* The first cluster with a backing name of length bytes at 0x200. */
static uint8_t *with_backing_name(const char *name, uint32_t length)
{
    uint8_t *b = valid_header();
    qcow2_put_be64(b + 8, 0x200);
    qcow2_put_be32(b + 16, length);
    memcpy(b + 0x200, name, length);
    return b;
}

Test(qcow2_format, backing_name_too_long)
{
    char name[1024];
    memset(name, 'x', sizeof(name));
    uint8_t *b = with_backing_name(name, 1024);
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid backing file name length 1024");
    free(b);
    b = with_backing_name(name, 1023);
    struct qcow2_image_header image;
    decode_ok(b, CLUSTER, FILE_SIZE, &image);
    cr_expect_eq(strlen(image.backing_file), 1023);
    qcow2_image_header_clear(&image);
    free(b);
}

Test(qcow2_format, backing_name_with_nul)
{
    uint8_t *b = with_backing_name("base\0.raw", 9);
    expect_rejected(b, FILE_SIZE, -EINVAL, "backing file name contains a NUL byte");
    free(b);
}

Test(qcow2_format, backing_name_offset_outside_the_cluster)
{
    uint8_t *b = with_backing_name("base", 4);
    qcow2_put_be64(b + 8, CLUSTER + 8);
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid backing file name offset 0x10008");
    qcow2_put_be64(b + 8, 64); /* inside the fixed header */
    expect_rejected(b, FILE_SIZE, -EINVAL, "invalid backing file name offset 0x40");
    free(b);
}

Test(qcow2_format, extension_past_the_header_area)
{
    uint8_t *b = valid_header();
    /* The feature table claims more bytes than the cluster holds. */
    qcow2_put_be32(b + 116, CLUSTER);
    expect_rejected(b, FILE_SIZE, -EINVAL, "header extension 0x6803f857 runs past the end of the header area");
    free(b);
    /* With a backing name, the area ends where the name starts. */
    b = with_backing_name("base", 4);
    qcow2_put_be32(b + 112, 0x12345678);
    qcow2_put_be32(b + 116, 0x200 - 112 - 8 + 1);
    expect_rejected(b, FILE_SIZE, -EINVAL, "header extension 0x12345678 runs past the end of the header area");
    qcow2_put_be32(b + 116, 0x200 - 112 - 8);
    struct qcow2_image_header image;
    decode_ok(b, CLUSTER, FILE_SIZE, &image);
    cr_expect_eq(image.extension_count, 1);
    cr_expect_str_eq(image.backing_file, "base");
    qcow2_image_header_clear(&image);
    free(b);
}

Test(qcow2_format, unknown_incompatible_bit_named_by_the_image)
{
    uint8_t *b = valid_header();
    /* Rename the "extended L2 entries" entry (5th) to bit 5, "shiny new thing". */
    uint8_t *entry = b + 112 + 8 + 4 * 48;
    entry[1] = 5;
    memset(entry + 2, 0, 46);
    memcpy(entry + 2, "shiny new thing", 15);
    qcow2_put_be64(b + 72, 1ull << 5);
    expect_rejected(b, FILE_SIZE, -ENOTSUP, "unsupported qcow2 feature(s): shiny new thing");
    /* Two bits: one named, one not. */
    qcow2_put_be64(b + 72, (1ull << 5) | (1ull << 40));
    expect_rejected(b, FILE_SIZE, -ENOTSUP, "unsupported qcow2 feature(s): shiny new thing, unknown bit 40");
    free(b);
}

Test(qcow2_format, unknown_incompatible_bit_without_a_table)
{
    uint8_t *b = first_cluster(qemu_v3_default, QCOW2_V3_HEADER_LENGTH, CLUSTER);
    qcow2_put_be64(b + 72, 1ull << 5);
    expect_rejected(b, FILE_SIZE, -ENOTSUP, "unsupported qcow2 feature(s): unknown bit 5");
    qcow2_put_be64(b + 72, 1ull << 63);
    expect_rejected(b, FILE_SIZE, -ENOTSUP, "unsupported qcow2 feature(s): unknown bit 63");
    free(b);
}

Test(qcow2_format, feature_names_describe)
{
    struct qcow2_image_header image = {0};
    char *text = qcow2_feature_names_describe(&image, QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_EXTENDED_L2 | (1ull << 9));
    cr_expect_str_eq(text, "dirty bit, extended L2 entries, unknown bit 9");
    free(text);
}

/* ---- L2 entries ---- */

static const struct qcow2_header v3 = {.version = 3, .cluster_bits = 16, .refcount_order = 4};
static const struct qcow2_header v2 = {.version = 2, .cluster_bits = 16, .refcount_order = 4};
static const struct qcow2_header v3_extended = {.version = 3, .cluster_bits = 16, .refcount_order = 4,
                                                .incompatible_features = QCOW2_INCOMPAT_EXTENDED_L2};

static int kind_of(const struct qcow2_header *h, uint64_t entry, uint64_t bitmap, unsigned subcluster)
{
    enum qcow2_cluster_kind kind = (enum qcow2_cluster_kind)-1;
    int rc = qcow2_l2_entry_kind(h, entry, bitmap, subcluster, &kind);
    return rc < 0 ? rc : (int)kind;
}

#define HOST 0x50000ull

Test(qcow2_format, l2_entry_kinds)
{
    cr_expect_eq(kind_of(&v3, 0, 0, 0), QCOW2_CLUSTER_UNALLOCATED);
    cr_expect_eq(kind_of(&v3, HOST, 0, 0), QCOW2_CLUSTER_NORMAL);
    cr_expect_eq(kind_of(&v3, HOST | QCOW2_OFLAG_COPIED, 0, 0), QCOW2_CLUSTER_NORMAL);
    cr_expect_eq(kind_of(&v3, QCOW2_OFLAG_ZERO, 0, 0), QCOW2_CLUSTER_ZERO_PLAIN);
    cr_expect_eq(kind_of(&v3, HOST | QCOW2_OFLAG_ZERO, 0, 0), QCOW2_CLUSTER_ZERO_ALLOC);
    cr_expect_eq(kind_of(&v3, HOST | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO, 0, 0), QCOW2_CLUSTER_ZERO_ALLOC);
    cr_expect_eq(kind_of(&v3, QCOW2_OFLAG_COMPRESSED | 0x123456, 0, 0), QCOW2_CLUSTER_COMPRESSED);
    /* Compressed: every bit below 62 is the descriptor, reserved bits included. */
    cr_expect_eq(kind_of(&v3, QCOW2_OFLAG_COMPRESSED | 0x3fffffffffffffffull, 0, 0), QCOW2_CLUSTER_COMPRESSED);
    /* Host offsets need not be aligned here: the caller checks against the cluster size. */
    cr_expect_eq(kind_of(&v3, 0x50200, 0, 0), QCOW2_CLUSTER_NORMAL);
}

Test(qcow2_format, l2_entry_invalid)
{
    /* COPIED without a cluster. */
    cr_expect_eq(kind_of(&v3, QCOW2_OFLAG_COPIED, 0, 0), -EINVAL);
    /* Compressed clusters are never COPIED and have no subcluster bitmap. */
    cr_expect_eq(kind_of(&v3, QCOW2_OFLAG_COMPRESSED | QCOW2_OFLAG_COPIED | HOST, 0, 0), -EINVAL);
    cr_expect_eq(kind_of(&v3_extended, QCOW2_OFLAG_COMPRESSED | HOST, 1, 0), -EINVAL);
    cr_expect_eq(kind_of(&v3_extended, QCOW2_OFLAG_COMPRESSED | HOST, 0, 0), QCOW2_CLUSTER_COMPRESSED);
    /* Reserved bits: 1-8 and 56-61. */
    for (unsigned bit = 1; bit <= 8; bit++) {
        cr_expect_eq(kind_of(&v3, HOST | (1ull << bit), 0, 0), -EINVAL, "bit %u", bit);
        cr_expect_eq(kind_of(&v3_extended, HOST | (1ull << bit), 1, 0), -EINVAL, "extended, bit %u", bit);
    }
    for (unsigned bit = 56; bit <= 61; bit++) {
        cr_expect_eq(kind_of(&v3, HOST | (1ull << bit), 0, 0), -EINVAL, "bit %u", bit);
        cr_expect_eq(kind_of(&v3_extended, HOST | (1ull << bit), 1, 0), -EINVAL, "extended, bit %u", bit);
    }
    cr_expect_eq(kind_of(&v3, QCOW2_OFLAG_ZERO | (1ull << 60), 0, 0), -EINVAL);
}

Test(qcow2_format, zero_flag_is_v3_only)
{
    cr_expect_eq(kind_of(&v2, QCOW2_OFLAG_ZERO, 0, 0), -EINVAL);
    cr_expect_eq(kind_of(&v2, HOST | QCOW2_OFLAG_ZERO, 0, 0), -EINVAL);
    cr_expect_eq(kind_of(&v2, HOST | QCOW2_OFLAG_COPIED, 0, 0), QCOW2_CLUSTER_NORMAL);
    cr_expect_eq(kind_of(&v2, 0, 0, 0), QCOW2_CLUSTER_UNALLOCATED);
    cr_expect_eq(kind_of(&v2, QCOW2_OFLAG_COMPRESSED | HOST, 0, 0), QCOW2_CLUSTER_COMPRESSED);
}

/* In an external data file offset 0 is a real cluster, told from "none" by COPIED. */
Test(qcow2_format, data_file_offset_zero)
{
    const struct qcow2_header data = {.version = 3, .cluster_bits = 16, .refcount_order = 4,
                                      .incompatible_features = QCOW2_INCOMPAT_DATA_FILE};
    const struct qcow2_header data_extended = {
        .version = 3, .cluster_bits = 16, .refcount_order = 4,
        .incompatible_features = QCOW2_INCOMPAT_DATA_FILE | QCOW2_INCOMPAT_EXTENDED_L2};
    cr_expect_eq(kind_of(&data, QCOW2_OFLAG_COPIED, 0, 0), QCOW2_CLUSTER_NORMAL);
    cr_expect_eq(kind_of(&data, QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO, 0, 0), QCOW2_CLUSTER_ZERO_ALLOC);
    cr_expect_eq(kind_of(&data, QCOW2_OFLAG_ZERO, 0, 0), QCOW2_CLUSTER_ZERO_PLAIN);
    cr_expect_eq(kind_of(&data, 0, 0, 0), QCOW2_CLUSTER_UNALLOCATED);
    cr_expect_eq(kind_of(&data_extended, QCOW2_OFLAG_COPIED, 1, 0), QCOW2_CLUSTER_NORMAL);
    cr_expect_eq(kind_of(&data_extended, QCOW2_OFLAG_COPIED, 1ull << 33, 1), QCOW2_CLUSTER_ZERO_ALLOC);
    cr_expect(qcow2_l2_entry_has_host(&data, QCOW2_OFLAG_COPIED));
    cr_expect_not(qcow2_l2_entry_has_host(&v3, QCOW2_OFLAG_COPIED));
    cr_expect_not(qcow2_l2_entry_has_host(&data, 0));
    /* A data file cannot hold compressed clusters. */
    cr_expect_eq(kind_of(&data, QCOW2_OFLAG_COMPRESSED | HOST, 0, 0), -EINVAL);
}

static uint64_t bitmap(uint32_t allocated, uint32_t zero) { return ((uint64_t)zero << 32) | allocated; }

Test(qcow2_format, extended_l2_subclusters)
{
    uint64_t entry = HOST | QCOW2_OFLAG_COPIED;
    uint64_t map = bitmap((1u << 0) | (1u << 3) | (1u << 31), (1u << 4) | (1u << 30));
    cr_expect_eq(kind_of(&v3_extended, entry, map, 0), QCOW2_CLUSTER_NORMAL);
    cr_expect_eq(kind_of(&v3_extended, entry, map, 3), QCOW2_CLUSTER_NORMAL);
    cr_expect_eq(kind_of(&v3_extended, entry, map, 31), QCOW2_CLUSTER_NORMAL);
    cr_expect_eq(kind_of(&v3_extended, entry, map, 4), QCOW2_CLUSTER_ZERO_ALLOC);
    cr_expect_eq(kind_of(&v3_extended, entry, map, 30), QCOW2_CLUSTER_ZERO_ALLOC);
    cr_expect_eq(kind_of(&v3_extended, entry, map, 1), QCOW2_CLUSTER_UNALLOCATED);
    cr_expect_eq(kind_of(&v3_extended, entry, map, 29), QCOW2_CLUSTER_UNALLOCATED);
    /* Without a host cluster: zero subclusters are plain, unallocated stays unallocated. */
    cr_expect_eq(kind_of(&v3_extended, 0, bitmap(0, 1u << 7), 7), QCOW2_CLUSTER_ZERO_PLAIN);
    cr_expect_eq(kind_of(&v3_extended, 0, bitmap(0, 1u << 7), 6), QCOW2_CLUSTER_UNALLOCATED);
    cr_expect_eq(kind_of(&v3_extended, 0, bitmap(0, 0xffffffffu), 31), QCOW2_CLUSTER_ZERO_PLAIN);
    cr_expect_eq(kind_of(&v3_extended, 0, 0, 0), QCOW2_CLUSTER_UNALLOCATED);
    /* A host cluster with nothing allocated yet (preallocated): unallocated. */
    cr_expect_eq(kind_of(&v3_extended, entry, 0, 5), QCOW2_CLUSTER_UNALLOCATED);
    cr_expect_eq(kind_of(&v3_extended, entry, bitmap(0xffffffffu, 0), 17), QCOW2_CLUSTER_NORMAL);
}

Test(qcow2_format, extended_l2_invalid_bitmaps)
{
    uint64_t entry = HOST | QCOW2_OFLAG_COPIED;
    /* Allocated and zero both set, whichever subcluster is asked about. */
    cr_expect_eq(kind_of(&v3_extended, entry, bitmap(1u << 9, 1u << 9), 9), -EINVAL);
    cr_expect_eq(kind_of(&v3_extended, entry, bitmap(1u << 9, 1u << 9), 0), -EINVAL);
    cr_expect_eq(kind_of(&v3_extended, entry, bitmap(0xffffffffu, 0x80000000u), 0), -EINVAL);
    /* Allocated without a host cluster. */
    cr_expect_eq(kind_of(&v3_extended, 0, bitmap(1u << 2, 0), 2), -EINVAL);
    cr_expect_eq(kind_of(&v3_extended, 0, bitmap(1u << 2, 0), 3), -EINVAL);
    /* No zero flag with extended L2 (bit 0 is reserved there). */
    cr_expect_eq(kind_of(&v3_extended, QCOW2_OFLAG_ZERO, 0, 0), -EINVAL);
    cr_expect_eq(kind_of(&v3_extended, entry | QCOW2_OFLAG_ZERO, bitmap(1, 0), 0), -EINVAL);
}

/* ---- compressed descriptors ---- */

static void compressed_round_trip(unsigned cluster_bits, uint64_t host, uint64_t length)
{
    struct qcow2_header h = {.version = 3, .cluster_bits = cluster_bits, .refcount_order = 4};
    uint64_t entry = qcow2_compressed_entry(&h, host, length);
    cr_expect(entry & QCOW2_OFLAG_COMPRESSED, "cluster_bits %u: compressed flag", cluster_bits);
    cr_expect(!(entry & QCOW2_OFLAG_COPIED), "cluster_bits %u: no COPIED flag", cluster_bits);
    enum qcow2_cluster_kind kind;
    cr_expect_eq(qcow2_l2_entry_kind(&h, entry, 0, 0, &kind), 0);
    cr_expect_eq(kind, QCOW2_CLUSTER_COMPRESSED);
    uint64_t got_host, got_length;
    qcow2_compressed_descriptor(&h, entry, &got_host, &got_length);
    cr_expect_eq(got_host, host, "cluster_bits %u: host %#llx, got %#llx", cluster_bits,
                 (unsigned long long)host, (unsigned long long)got_host);
    /* The length covers the data, up to the end of the sector it ends in. */
    uint64_t last_sector_end = (host + length + 511) / 512 * 512;
    cr_expect_eq(got_length, last_sector_end - host, "cluster_bits %u, host %#llx, length %llu: got %llu",
                 cluster_bits, (unsigned long long)host, (unsigned long long)length,
                 (unsigned long long)got_length);
    cr_expect_geq(got_length, length);
    cr_expect_lt(got_length - length, 512);
}

Test(qcow2_format, compressed_descriptors)
{
    unsigned bits[] = {9, 16, 21};
    for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++) {
        unsigned cb = bits[i];
        uint64_t cluster = 1ull << cb;
        /* Sector aligned, inside one sector. */
        compressed_round_trip(cb, 5 * cluster, 100);
        compressed_round_trip(cb, 5 * cluster, 512);
        /* Unaligned start, crossing a sector boundary. */
        compressed_round_trip(cb, 5 * cluster + 300, 400);
        /* Crossing a cluster boundary (data of one cluster continuing into the next host cluster). */
        compressed_round_trip(cb, 6 * cluster - 100, cb == 9 ? 300 : cluster / 2);
        /* As large as it can be: a whole cluster starting mid-sector (cluster + 1 sectors). */
        compressed_round_trip(cb, 7 * cluster + 511, cluster);
        /* A far host offset: the offset field is 62 - (cluster_bits - 8) bits wide. */
        compressed_round_trip(cb, (1ull << (62 - (cb - 8))) - 1024 + 7, 500);
    }
}

Test(qcow2_format, compressed_descriptor_fields)
{
    /* 64 KiB clusters: offset in bits 0-53, extra sectors in bits 54-61. */
    struct qcow2_header h = {.version = 3, .cluster_bits = 16, .refcount_order = 4};
    uint64_t entry = qcow2_compressed_entry(&h, 0x10100, 1024);
    /* 0x10100 .. 0x104ff touches sectors 0x80 .. 0x82: 2 extra sectors. */
    cr_expect_eq(entry, QCOW2_OFLAG_COMPRESSED | (2ull << 54) | 0x10100);
    uint64_t host, length;
    qcow2_compressed_descriptor(&h, QCOW2_OFLAG_COMPRESSED | (2ull << 54) | 0x10100, &host, &length);
    cr_expect_eq(host, 0x10100);
    cr_expect_eq(length, 3 * 512 - 0x100);
    /* 512-byte clusters: one bit of sector count (bit 61). */
    struct qcow2_header small = {.version = 3, .cluster_bits = 9, .refcount_order = 4};
    entry = qcow2_compressed_entry(&small, 0x1200 + 511, 2);
    cr_expect_eq(entry, QCOW2_OFLAG_COMPRESSED | (1ull << 61) | (0x1200 + 511));
}

/* Refcount entries of every width: set and read back, neighbours untouched, layout as QEMU's. */
Test(qcow2_format, refcount_entries_every_width)
{
    for (uint32_t bits = 1; bits <= 64; bits *= 2) {
        uint8_t block[512];
        memset(block, 0, sizeof(block));
        uint64_t max = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
        uint64_t entries = sizeof(block) * 8 / bits;
        for (uint64_t i = 0; i < entries; i++)
            qcow2_refcount_entry_set(block, bits, i, (i * 2654435761u) & max);
        for (uint64_t i = 0; i < entries; i++)
            cr_assert_eq(qcow2_refcount_entry_get(block, bits, i), (i * 2654435761u) & max, "bits %u entry %llu",
                         bits, (unsigned long long)i);
        qcow2_refcount_entry_set(block, bits, 1, 0);
        cr_assert_eq(qcow2_refcount_entry_get(block, bits, 0), 0, "bits %u: entry 0 kept", bits);
        cr_assert_eq(qcow2_refcount_entry_get(block, bits, 2), ((uint64_t)2 * 2654435761u) & max, "bits %u: entry 2 kept", bits);
    }
    /* QEMU's layout: 1-bit entries low bit first, 16-bit entries big-endian. */
    uint8_t block[4] = {0};
    qcow2_refcount_entry_set(block, 1, 3, 1);
    cr_assert_eq(block[0], 0x08);
    memset(block, 0, sizeof(block));
    qcow2_refcount_entry_set(block, 16, 1, 0x0102);
    cr_assert(block[2] == 0x01 && block[3] == 0x02);
}
