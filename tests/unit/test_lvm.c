/*
 * LVM in user space: the metadata parser on lvm2's own output and on
 * malformed text (clear errors, never a crash), segment mapping (linear,
 * striped, several segments), PV labels and metadata areas built here with
 * lvm's checksums (wrapped circular text, bad checksums, bad locations),
 * and the device-mapper guard: an LV dm has active is never opened for
 * writing through lvm_devices.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/bdev.h"
#include "common/byte_order.h"
#include "block/lvm/lvm.h"
#include "block/lvm/lvm_label.h"
#include "block/lvm/lvm_map.h"
#include "block/lvm/lvm_metadata.h"
#include "block/lvm/lvm_text.h"
#include "block/threadpool.h"

#ifndef LVM_FIXTURES
#error "LVM_FIXTURES must name tests/unit/lvm-fixtures"
#endif

#define MiB (1024u * 1024u)

static char *fixture(const char *name, size_t *length)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", LVM_FIXTURES, name);
    FILE *file = fopen(path, "rb");
    cr_assert_not_null(file, "cannot open %s", path);
    char *text = calloc(1, 1 << 20);
    *length = fread(text, 1, (1 << 20) - 1, file);
    fclose(file);
    return text;
}

static void parse_fixture(const char *name, struct lvm_vg *vg)
{
    size_t length;
    char *text = fixture(name, &length);
    char *message = NULL;
    int rc = lvm_vg_parse(text, length, vg, &message);
    cr_assert_eq(rc, 0, "%s: %s", name, message ? message : "?");
    free(text);
}

/* ---- the parser ---- */

Test(lvm_metadata, parses_lvm2_output)
{
    struct lvm_vg vg;
    parse_fixture("vg_lvm2_03_16.txt", &vg);
    cr_assert_str_eq(vg.name, "vg");
    cr_assert_eq(vg.seqno, 8);
    cr_assert_eq(vg.extent_size, 2048);
    cr_assert_eq(vg.pv_count, 2);
    cr_assert_str_eq(vg.pvs[0].uuid, "ECcgQeSGcSfEvJumgsBJxcwNHG7fcKiS");
    cr_assert_eq(vg.pvs[1].pe_start, 2048);
    cr_assert_eq(vg.pvs[1].pe_count, 63);
    const struct lvm_lv *str = lvm_vg_find_lv(&vg, "str");
    cr_assert_not_null(str);
    cr_assert_eq(str->segments[0].stripe_count, 2);
    cr_assert_eq(str->segments[0].stripe_size, 128);
    cr_assert_eq(str->segments[0].stripes[1].pv, 1);
    const struct lvm_lv *multi = lvm_vg_find_lv(&vg, "multi");
    cr_assert_eq(multi->segment_count, 2);
    cr_assert_eq(multi->segments[1].start_extent, 4);
    const struct lvm_lv *ro = lvm_vg_find_lv(&vg, "ro");
    cr_assert(!ro->writable);
    cr_assert(lvm_vg_find_lv(&vg, "lin")->writable);
    cr_assert_null(lvm_vg_find_lv(&vg, "nope"));
    lvm_vg_clear(&vg);
}

Test(lvm_metadata, snapshot_members_and_thin_volumes)
{
    struct lvm_vg vg;
    parse_fixture("vg_snapshot_thin.txt", &vg);
    cr_assert(lvm_vg_find_lv(&vg, "base")->in_snapshot);
    cr_assert(lvm_vg_find_lv(&vg, "base_snap")->in_snapshot);
    char *message = NULL;
    cr_assert_eq(lvm_lv_check_mappable(&vg, lvm_vg_find_lv(&vg, "base"), &message), 0);
    const char *refused[][2] = {{"snapshot0", "'snapshot'"}, {"pool", "'thin-pool'"}, {"thin1", "'thin'"}};
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(lvm_lv_check_mappable(&vg, lvm_vg_find_lv(&vg, refused[i][0]), &message), -ENOTSUP);
        cr_assert_not_null(strstr(message, refused[i][1]), "%s: %s", refused[i][0], message);
    }
    free(message);
    lvm_vg_clear(&vg);
}

/* Malformed metadata: each is refused with a message containing the text given. */
Test(lvm_metadata, malformed_text_is_refused_clearly)
{
    static const char pv[] = "physical_volumes { pv0 { id = \"ECcgQe-SGcS-fEvJ-umgs-BJxc-wNHG-7fcKiS\" "
                             "pe_start = 2048 pe_count = 10 } }\n";
    struct {
        const char *text;
        const char *message;
    } cases[] = {
        {"vg { seqno = 1 extent_size = 8", "missing '}'"},
        {"vg { seqno = 1 } }", "unexpected '}'"},
        {"vg { seqno = \"open", "unterminated string"},
        {"vg { seqno = 99999999999999999999999 }", "integer out of range"},
        {"vg { seqno = [1, 2 }", "expected ',' or ']'"},
        {"vg { seqno 1 }", "expected '=' or '{'"},
        {"vg { = 1 }", "expected a name"},
        {"seqno = 1\n", "no volume group section"},
        {"vg { extent_size = 8 }", "has no seqno"},
        {"vg { seqno = 1 extent_size = 0 }", "extent_size is 0"},
        {"vg { seqno = 1 extent_size = -8 }", "extent_size is not an integer"},
        {"vg { seqno = 1 extent_size = 8 }", "has no physical_volumes"},
        {"vg { seqno = 1 extent_size = 8 physical_volumes { pv0 { id = \"short\" pe_start = 0 pe_count = 1 } } }",
         "has no valid id"},
        {"vg { seqno = 1 extent_size = 8 physical_volumes { pv0 { id = \"ECcgQe-SGcS-fEvJ-umgs-BJxc-wNHG-7fcKiS\" "
         "pe_start = 2048 pe_count = 4294967297 } } }",
         "pe_count is not an integer"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct lvm_vg vg;
        char *message = NULL;
        int rc = lvm_vg_parse(cases[i].text, strlen(cases[i].text), &vg, &message);
        cr_assert_eq(rc, -EINVAL, "case %zu (%s) returned %d", i, cases[i].text, rc);
        cr_assert_not_null(message);
        cr_assert_not_null(strstr(message, cases[i].message), "case %zu: '%s'", i, message);
        free(message);
    }
    /* LV-level errors, over a valid PV. */
    const char *lv_cases[][2] = {
        {"lv { status = [\"READ\"] segment_count = 2 segment1 { start_extent = 0 extent_count = 1 type = \"striped\" "
         "stripe_count = 1 stripes = [\"pv0\", 0] } }",
         "segment_count 2, but 1 segments"},
        {"lv { segment_count = 1 segment1 { start_extent = 0 extent_count = 1 type = \"striped\" stripe_count = 1 "
         "stripes = [\"pv9\", 0] } }",
         "unknown physical volume 'pv9'"},
        {"lv { segment_count = 1 segment1 { start_extent = 0 extent_count = 4 type = \"striped\" stripe_count = 1 "
         "stripes = [\"pv0\", 8] } }",
         "lie beyond pv0's 10 extents"},
        {"lv { segment_count = 1 segment1 { start_extent = 0 extent_count = 3 type = \"striped\" stripe_count = 2 "
         "stripe_size = 4 stripes = [\"pv0\", 0, \"pv0\", 5] } }",
         "do not divide into 2 stripes"},
        {"lv { segment_count = 1 segment1 { start_extent = 0 extent_count = 2 type = \"striped\" stripe_count = 2 "
         "stripe_size = 3 stripes = [\"pv0\", 0, \"pv0\", 5] } }",
         "is not a power of two"},
        {"lv { segment_count = 1 segment1 { start_extent = 0 extent_count = 2 type = \"striped\" stripe_count = 2 "
         "stripe_size = 4 stripes = [\"pv0\", 0] } }",
         "stripes must list 2 pairs"},
        {"lv { segment_count = 1 segment1 { start_extent = 3 extent_count = 1 type = \"striped\" stripe_count = 1 "
         "stripes = [\"pv0\", 0] } }",
         "expected to start at 0"},
        {"lv { segment_count = 1 segment1 { start_extent = 0 extent_count = 1 stripe_count = 1 } }",
         "segment has no type"},
    };
    for (size_t i = 0; i < sizeof(lv_cases) / sizeof(lv_cases[0]); i++) {
        char text[2048];
        snprintf(text, sizeof(text), "vg { seqno = 1 extent_size = 8 %s logical_volumes { %s } }", pv,
                 lv_cases[i][0]);
        struct lvm_vg vg;
        char *message = NULL;
        cr_assert_eq(lvm_vg_parse(text, strlen(text), &vg, &message), -EINVAL, "lv case %zu", i);
        cr_assert_not_null(strstr(message, lv_cases[i][1]), "lv case %zu: '%s'", i, message);
        free(message);
    }
}

Test(lvm_metadata, nesting_is_bounded)
{
    char text[4096] = "vg { ";
    for (int i = 0; i < 100; i++)
        strcat(text, "a { ");
    struct lvm_vg vg;
    char *message = NULL;
    cr_assert_eq(lvm_vg_parse(text, strlen(text), &vg, &message), -EINVAL);
    cr_assert_not_null(strstr(message, "nested too deep"), "%s", message);
    free(message);
}

/* ---- mapping ---- */

Test(lvm_map, linear_striped_and_segments)
{
    struct lvm_vg vg;
    parse_fixture("vg_lvm2_03_16.txt", &vg);
    const uint64_t extent = MiB, pe_start = MiB;
    struct lvm_piece piece;

    const struct lvm_lv *lin = lvm_vg_find_lv(&vg, "lin");
    cr_assert_eq(lvm_lv_size(&vg, lin), 8 * MiB);
    lvm_map(&vg, lin, 5000, 8 * MiB - 5000, &piece);
    cr_assert_eq(piece.pv, 0);
    cr_assert_eq(piece.offset, pe_start + 5000);
    cr_assert_eq(piece.length, 8 * MiB - 5000);

    /* str: 64 KiB chunks alternating pv0 (from extent 8) and pv1 (from extent 0). */
    const struct lvm_lv *str = lvm_vg_find_lv(&vg, "str");
    cr_assert_eq(lvm_lv_size(&vg, str), 16 * MiB);
    lvm_map(&vg, str, 100, 1 * MiB, &piece);
    cr_assert_eq(piece.pv, 0);
    cr_assert_eq(piece.offset, pe_start + 8 * extent + 100);
    cr_assert_eq(piece.length, 65536 - 100, "a piece ends at its chunk");
    lvm_map(&vg, str, 65536 + 7, 10, &piece);
    cr_assert_eq(piece.pv, 1);
    cr_assert_eq(piece.offset, pe_start + 7);
    lvm_map(&vg, str, 5 * 65536, 65536, &piece); /* chunk 5: pv1, row 2 */
    cr_assert_eq(piece.pv, 1);
    cr_assert_eq(piece.offset, pe_start + 2 * 65536);
    lvm_map(&vg, str, 16 * MiB - 1, 1, &piece); /* the last chunk (255): pv1, row 127 */
    cr_assert_eq(piece.pv, 1);
    cr_assert_eq(piece.offset, pe_start + 127 * 65536 + 65535);

    /* multi: 4 extents on pv1 from 8, then 4 on pv0 from 20. */
    const struct lvm_lv *multi = lvm_vg_find_lv(&vg, "multi");
    lvm_map(&vg, multi, 4 * MiB - 10, 20, &piece);
    cr_assert_eq(piece.pv, 1);
    cr_assert_eq(piece.offset, pe_start + 12 * extent - 10);
    cr_assert_eq(piece.length, 10, "a piece ends at its segment");
    lvm_map(&vg, multi, 4 * MiB, 20, &piece);
    cr_assert_eq(piece.pv, 0);
    cr_assert_eq(piece.offset, pe_start + 20 * extent);

    struct lvm_vg again;
    parse_fixture("vg_lvm2_03_16.txt", &again);
    cr_assert(lvm_lv_same_mapping(&vg, multi, &again, lvm_vg_find_lv(&again, "multi")));
    cr_assert(!lvm_lv_same_mapping(&vg, multi, &again, lvm_vg_find_lv(&again, "lin")));
    lvm_vg_clear(&again);
    lvm_vg_clear(&vg);
}

/* ---- labels and metadata areas, built as lvm writes them ---- */

#define PV_SIZE (4 * MiB)
#define MDA_OFFSET 4096u
#define MDA_SIZE (64u * 1024)

struct memory_pv {
    uint8_t *bytes;
    size_t size;
};

static int memory_read(void *opaque, void *buffer, size_t length, uint64_t offset)
{
    struct memory_pv *pv = opaque;
    if (offset > pv->size || length > pv->size - offset)
        return -EIO;
    memcpy(buffer, pv->bytes + offset, length);
    return 0;
}

static void put_le32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static void put_le64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

/* A PV with its label in sector 1 and text at text_offset (relative to the area) of its metadata area. */
static void memory_pv_build(struct memory_pv *pv, const char *text, uint64_t text_offset)
{
    pv->size = PV_SIZE;
    pv->bytes = calloc(1, PV_SIZE);
    uint8_t *label = pv->bytes + 512;
    memcpy(label, "LABELONE", 8);
    put_le64(label + 8, 1);
    put_le32(label + 20, 32);
    memcpy(label + 24, "LVM2 001", 8);
    memcpy(label + 32, "ECcgQeSGcSfEvJumgsBJxcwNHG7fcKiS", 32);
    put_le64(label + 64, PV_SIZE);
    put_le64(label + 72, MiB); /* data area; then 0,0 */
    put_le64(label + 104, MDA_OFFSET);
    put_le64(label + 112, MDA_SIZE); /* then 0,0 */
    put_le32(label + 16, lvm_crc(0xf597a6cf, label + 20, 512 - 20));

    size_t length = strlen(text);
    uint8_t *area = pv->bytes + MDA_OFFSET;
    uint64_t first = length < MDA_SIZE - text_offset ? length : MDA_SIZE - text_offset;
    memcpy(area + text_offset, text, first);
    memcpy(area + 512, text + first, length - first); /* wraps after the header */
    memcpy(area + 4, " LVM2 x[5A%r0N*>", 16);
    put_le32(area + 20, 1);
    put_le64(area + 24, MDA_OFFSET);
    put_le64(area + 32, MDA_SIZE);
    put_le64(area + 40, text_offset);
    put_le64(area + 48, length);
    put_le32(area + 56, lvm_crc(0xf597a6cf, text, length));
    put_le32(area, lvm_crc(0xf597a6cf, area + 4, 512 - 4));
}

static void expect_metadata(struct memory_pv *pv, const char *expected)
{
    struct lvm_pv_label label;
    char *message = NULL;
    cr_assert_eq(lvm_label_read(memory_read, pv, pv->size, &label, &message), 0, "%s", message ? message : "");
    cr_assert_str_eq(label.uuid, "ECcgQeSGcSfEvJumgsBJxcwNHG7fcKiS");
    cr_assert_eq(label.metadata_area_count, 1);
    char *text;
    size_t length;
    cr_assert_eq(lvm_metadata_area_read(memory_read, pv, pv->size, &label.metadata_areas[0], &text, &length,
                                        &message),
                 0, "%s", message ? message : "");
    cr_assert_str_eq(text, expected);
    free(text);
}

Test(lvm_label, reads_label_and_metadata_even_when_wrapped)
{
    size_t length;
    char *text = fixture("vg_lvm2_03_16.txt", &length);
    struct memory_pv pv;
    memory_pv_build(&pv, text, 512);
    expect_metadata(&pv, text);
    free(pv.bytes);
    /* The circular buffer's end cuts the text in two. */
    memory_pv_build(&pv, text, MDA_SIZE - 700);
    expect_metadata(&pv, text);
    free(pv.bytes);
    free(text);
}

static void expect_label_error(struct memory_pv *pv, int expected, const char *text)
{
    struct lvm_pv_label label;
    char *message = NULL, *metadata = NULL;
    size_t length;
    int rc = lvm_label_read(memory_read, pv, pv->size, &label, &message);
    if (rc == 0)
        rc = lvm_metadata_area_read(memory_read, pv, pv->size, &label.metadata_areas[0], &metadata, &length,
                                    &message);
    free(metadata);
    cr_assert_eq(rc, expected, "expected %d, got %d (%s)", expected, rc, message ? message : "");
    if (text)
        cr_assert_not_null(strstr(message, text), "'%s' does not say '%s'", message, text);
    free(message);
}

Test(lvm_label, corruption_is_reported)
{
    struct memory_pv pv;
    memory_pv_build(&pv, "vg { }", 512);
    pv.bytes[512 + 100] ^= 1;
    expect_label_error(&pv, -EINVAL, "LVM label in sector 1 has a bad checksum");
    free(pv.bytes);

    memory_pv_build(&pv, "vg { }", 512);
    memset(pv.bytes + 512, 0, 8);
    expect_label_error(&pv, -ENOENT, NULL);
    free(pv.bytes);

    memory_pv_build(&pv, "vg { }", 512);
    pv.bytes[MDA_OFFSET + 100] ^= 1;
    expect_label_error(&pv, -EINVAL, "metadata area header at 4096 has a bad checksum");
    free(pv.bytes);

    memory_pv_build(&pv, "vg { }", 512);
    pv.bytes[MDA_OFFSET + 512 + 2] ^= 1;
    expect_label_error(&pv, -EINVAL, "metadata text at 4608 has a bad checksum");
    free(pv.bytes);

    /* A text location outside the area (header checksum redone so only the location is wrong). */
    memory_pv_build(&pv, "vg { }", 512);
    put_le64(pv.bytes + MDA_OFFSET + 40, MDA_SIZE + 512);
    put_le32(pv.bytes + MDA_OFFSET, lvm_crc(0xf597a6cf, pv.bytes + MDA_OFFSET + 4, 512 - 4));
    expect_label_error(&pv, -EINVAL, "metadata text location");
    free(pv.bytes);

    /* An area larger than the PV. */
    memory_pv_build(&pv, "vg { }", 512);
    put_le64(pv.bytes + 512 + 112, PV_SIZE);
    put_le32(pv.bytes + 512 + 16, lvm_crc(0xf597a6cf, pv.bytes + 512 + 20, 512 - 20));
    expect_label_error(&pv, -EINVAL, "does not fit the PV");
    free(pv.bytes);
}

/* ---- the device-mapper guard ---- */

Test(lvm_device_mapper, names_double_dashes)
{
    char directory[] = "/tmp/luna-lvm-dm-XXXXXX";
    cr_assert_not_null(mkdtemp(directory));
    char path[256];
    snprintf(path, sizeof(path), "%s/my--vg-lv--1", directory);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert(lvm_device_mapper_active(directory, "my-vg", "lv-1"));
    cr_assert(!lvm_device_mapper_active(directory, "my", "vg-lv-1"));
    cr_assert(!lvm_device_mapper_active(directory, "my-vg", "lv"));
    unlink(path);
    rmdir(directory);
}

Test(lvm_device_mapper, active_volume_is_never_written_from_its_pvs)
{
    char directory[] = "/tmp/luna-lvm-open-XXXXXX";
    cr_assert_not_null(mkdtemp(directory));
    size_t length;
    char *text = fixture("vg_lvm2_03_16.txt", &length);
    /* pv0 of the fixture: every LV but str and multi lives on it alone. */
    struct memory_pv pv;
    memory_pv_build(&pv, text, 512);
    free(text);
    char pv_path[256], mapper[256], dm_node[300];
    snprintf(pv_path, sizeof(pv_path), "%s/pv0.img", directory);
    int fd = open(pv_path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, pv.bytes, pv.size), (ssize_t)pv.size);
    cr_assert_eq(ftruncate(fd, 64 * MiB), 0); /* pe_count 63 extents of 1 MiB after 1 MiB */
    close(fd);
    free(pv.bytes);
    snprintf(mapper, sizeof(mapper), "%s/mapper", directory);
    cr_assert_eq(mkdir(mapper, 0700), 0);

    struct bdev_options options;
    bdev_options_init(&options);
    options.path = "vg/lin";
    options.format = BDEV_FORMAT_LVM;
    options.lvm_devices = pv_path;
    const char *saved = lvm_mapper_directory;
    lvm_mapper_directory = mapper;
    struct bdev *bdev;
    char *message = NULL;
    cr_assert_eq(bdev_open(&options, &bdev, &message), 0, "%s", message ? message : "");
    cr_assert_eq(bdev->size, 8 * MiB);
    cr_assert(!bdev_is_read_only(bdev));
    bdev_close(bdev);

    /* dm has it: read-write is refused, read-only allowed. */
    snprintf(dm_node, sizeof(dm_node), "%s/vg-lin", mapper);
    fd = open(dm_node, O_CREAT | O_WRONLY, 0600);
    close(fd);
    cr_assert_eq(bdev_open(&options, &bdev, &message), -EBUSY);
    cr_assert_not_null(strstr(message, "vg/lin is active in device-mapper"), "%s", message);
    free(message);
    message = NULL;
    options.readonly = true;
    cr_assert_eq(bdev_open(&options, &bdev, &message), 0, "%s", message ? message : "");
    bdev_close(bdev);

    /* str needs pv1, which is not given. */
    options.path = "vg/str";
    cr_assert_eq(bdev_open(&options, &bdev, &message), -ENOENT);
    cr_assert_not_null(strstr(message, "needs physical volume pv1"), "%s", message);
    free(message);

    lvm_mapper_directory = saved;
    threadpool_shutdown();
    unlink(dm_node);
    rmdir(mapper);
    unlink(pv_path);
    rmdir(directory);
}
