/*
 * qcow2_check, the library behind `luna-img check` (and later lunad's repair
 * of dirty images at open): counts, messages and repairs on images made by
 * qcow2_create with one inconsistency written in by hand.  The comparison
 * with qemu-img check itself is tests/integration/test_luna_img_check.sh.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/qcow2/qcow2_check.h"
#include "block/qcow2/qcow2_create.h"
#include "block/qcow2/qcow2_format.h"

#define CLUSTER 65536u

static char path[] = "/tmp/luna-qcow2-check.XXXXXX";
static char lines[64][256];
static int line_count;

static void collect(void *opaque, const char *line)
{
    (void)opaque;
    if (line_count < 64)
        snprintf(lines[line_count++], sizeof(lines[0]), "%s", line);
}

static bool said(const char *text)
{
    for (int i = 0; i < line_count; i++)
        if (!strcmp(lines[i], text))
            return true;
    return false;
}

static void fini(void)
{
    if (!getenv("KEEP_IMAGE"))
        unlink(path);
}

TestSuite(qcow2_check, .fini = fini);

/* A 4 MiB image with its L2 table and data clusters preallocated (as qemu-img makes it). */
static void create(bool lazy)
{
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    struct qcow2_create_options options;
    qcow2_create_options_init(&options);
    options.size = 4u << 20;
    options.lazy_refcounts = lazy;
    options.preallocation = QCOW2_PREALLOC_METADATA;
    char *message = NULL;
    cr_assert_eq(qcow2_create(path, &options, &message), 0, "%s", message ? message : "");
}

static uint64_t read64(uint64_t offset)
{
    uint8_t raw[8];
    int fd = open(path, O_RDONLY);
    cr_assert_eq(pread(fd, raw, 8, (off_t)offset), 8);
    close(fd);
    return qcow2_be64(raw);
}

static void write_bytes(uint64_t offset, const void *data, size_t length)
{
    int fd = open(path, O_WRONLY);
    cr_assert_eq(pwrite(fd, data, length, (off_t)offset), (ssize_t)length);
    close(fd);
}

/* Set the 16-bit stored refcount of a cluster (every cluster here is counted by the first block). */
static void set_refcount(uint64_t cluster, uint16_t value)
{
    uint64_t table = read64(48);
    uint64_t block = read64(table);
    uint8_t raw[2];
    qcow2_put_be16(raw, value);
    write_bytes(block + cluster * 2, raw, 2);
}

static struct qcow2_check_result check(enum qcow2_check_fix fix, int expected_rc)
{
    struct qcow2_check_result result;
    char *message = NULL;
    line_count = 0;
    int rc = qcow2_check(path, fix, &result, collect, NULL, &message);
    cr_assert_eq(rc, expected_rc, "qcow2_check: %d (%s)", rc, message ? message : "");
    free(message);
    return result;
}

Test(qcow2_check, clean_image)
{
    create(false);
    struct qcow2_check_result r = check(QCOW2_CHECK_FIX_NONE, 0);
    cr_expect_eq(r.corruptions + r.leaks + r.check_errors, 0);
    cr_expect_eq(r.total_clusters, 64);
    cr_expect_eq(r.allocated_clusters, 64); /* preallocated */
    cr_expect_eq(r.fragmented_clusters, 0);
    cr_expect_eq(r.image_end_offset, (5 + 64) * (int64_t)CLUSTER); /* header, reftable, refblock, L1, L2 */
    cr_expect_eq(line_count, 0);
}

Test(qcow2_check, leak_found_and_repaired)
{
    create(false);
    set_refcount(0, 2); /* the header, counted twice */
    struct qcow2_check_result r = check(QCOW2_CHECK_FIX_NONE, 0);
    cr_expect_eq(r.leaks, 1);
    cr_expect_eq(r.corruptions, 0);
    cr_expect(said("Leaked cluster 0 refcount=2 reference=1"));
    r = check(QCOW2_CHECK_FIX_LEAKS, 0);
    cr_expect_eq(r.leaks_fixed, 1);
    cr_expect_eq(r.leaks, 0);
    cr_expect(said("Repairing cluster 0 refcount=2 reference=1"));
    r = check(QCOW2_CHECK_FIX_NONE, 0);
    cr_expect_eq(r.leaks + r.corruptions, 0);
}

Test(qcow2_check, leaks_mode_does_not_raise_refcounts)
{
    create(false);
    set_refcount(5, 0); /* a data cluster counted free: only a rebuild repairs it */
    struct qcow2_check_result r = check(QCOW2_CHECK_FIX_NONE, 0);
    cr_expect_eq(r.corruptions, 2); /* the refcount, and the COPIED flag that no longer matches */
    cr_expect(said("ERROR cluster 5 refcount=0 reference=1"));
    check(QCOW2_CHECK_FIX_LEAKS, -EIO);
    cr_expect(said("ERROR need to rebuild refcount structures"));
}

Test(qcow2_check, rebuild_keeps_the_old_structure_until_the_header_switches)
{
    create(false);
    uint64_t old_table = read64(48);
    set_refcount(5, 0);
    struct qcow2_check_result r = check(QCOW2_CHECK_FIX_ALL, 0);
    cr_expect(said("Rebuilding refcount structure"));
    cr_expect_eq(r.corruptions, 0);
    cr_expect_geq(r.corruptions_fixed, 1);
    cr_expect_neq(read64(48), old_table, "the header points at the new table");
    r = check(QCOW2_CHECK_FIX_NONE, 0);
    cr_expect_eq(r.leaks + r.corruptions + r.check_errors, 0);
}

Test(qcow2_check, copied_flag_repaired)
{
    create(false);
    uint64_t l1 = read64(40);
    uint64_t l2 = read64(l1) & QCOW2_OFFSET_MASK;
    uint8_t raw[8];
    qcow2_put_be64(raw, read64(l2) & ~QCOW2_OFLAG_COPIED);
    write_bytes(l2, raw, 8);
    struct qcow2_check_result r = check(QCOW2_CHECK_FIX_NONE, 0);
    cr_expect_eq(r.corruptions, 1);
    r = check(QCOW2_CHECK_FIX_ALL, 0);
    cr_expect_eq(r.corruptions_fixed, 1);
    cr_expect(read64(l2) & QCOW2_OFLAG_COPIED);
}

Test(qcow2_check, repair_clears_the_dirty_bit)
{
    create(true);
    uint8_t raw[8];
    qcow2_put_be64(raw, read64(72) | QCOW2_INCOMPAT_DIRTY);
    write_bytes(72, raw, 8);
    set_refcount(6, 0); /* what lazy refcounts leave behind */
    check(QCOW2_CHECK_FIX_NONE, 0);
    cr_expect(read64(72) & QCOW2_INCOMPAT_DIRTY, "a check alone changes nothing");
    struct qcow2_check_result r = check(QCOW2_CHECK_FIX_ALL, 0);
    cr_expect_eq(r.corruptions, 0);
    cr_expect_eq(read64(72) & QCOW2_INCOMPAT_DIRTY, 0);
}

Test(qcow2_check, not_qcow2)
{
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "just some bytes, not an image", 29), 29);
    close(fd);
    struct qcow2_check_result r;
    char *message = NULL;
    cr_expect_lt(qcow2_check(path, QCOW2_CHECK_FIX_NONE, &r, NULL, NULL, &message), 0);
    cr_expect_not_null(message);
    free(message);
}
