/*
 * Overlays: per-client copy-on-write layers over a read-only base export,
 * ephemeral (private, gone with the client) and persistent (one file per
 * identity, shared while open, kept across opens).  Both the asynchronous
 * path (through an aio context) and the blocking one are used.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/overlay.h"
#include "block/threadpool.h"
#include "test_block_util.h"

#define BASE_SIZE (4u << 20)

static struct test_loop t;
static char *base_path;
static char overlay_dir[] = "/tmp/luna-overlay-test.XXXXXX";

static void init(void)
{
    test_loop_init(&t);
    base_path = temp_file_with_pattern(BASE_SIZE);
    cr_assert_not_null(mkdtemp(overlay_dir));
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *entry;
    while ((entry = readdir(d))) {
        if (entry->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, entry->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static void fini(void)
{
    test_loop_fini(&t);
    threadpool_shutdown();
    unlink(base_path);
    free(base_path);
    remove_dir(overlay_dir);
}

TestSuite(overlay, .init = init, .fini = fini);

static struct export *open_base(enum export_overlay mode)
{
    struct export_config config = {.name = "golden", .overlay = mode, .overlay_dir = overlay_dir};
    bdev_options_init(&config.bdev);
    config.bdev.path = base_path;
    struct export *export;
    char *message = NULL;
    cr_assert_eq(export_open(&config, &export, &message), 0, "%s", message ? message : "");
    if (mode != EXPORT_OVERLAY_NONE)
        cr_assert(bdev_is_read_only(export->bdev), "the base of overlays is opened read-only");
    return export;
}

static struct export *attach(struct export *base, const char *identity)
{
    struct export *view;
    char *message = NULL;
    cr_assert_eq(export_attach(base, identity, &view, &message), 0, "%s", message ? message : "");
    return view;
}

static int count_files(const char *dir)
{
    int count = 0;
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *entry;
    while ((entry = readdir(d)))
        count += entry->d_name[0] != '.';
    closedir(d);
    return count;
}

static void expect_pattern(struct export *view, uint64_t offset, uint64_t length)
{
    uint8_t *buffer = malloc(length);
    cr_assert_eq(run_io(&t, view->bdev, BDEV_OP_READ, 0, offset, length, buffer), 0);
    for (uint64_t i = 0; i < length; i++)
        cr_assert_eq(buffer[i], pattern_byte(offset + i), "byte %llu", (unsigned long long)(offset + i));
    free(buffer);
}

static void expect_byte(struct export *view, uint64_t offset, uint64_t length, uint8_t value)
{
    uint8_t *buffer = malloc(length);
    cr_assert_eq(bdev_pread(view->bdev, buffer, length, offset), 0);
    for (uint64_t i = 0; i < length; i++)
        cr_assert_eq(buffer[i], value, "byte %llu", (unsigned long long)(offset + i));
    free(buffer);
}

static void write_byte(struct export *view, uint64_t offset, uint64_t length, uint8_t value)
{
    uint8_t *buffer = malloc(length);
    memset(buffer, value, length);
    cr_assert_eq(run_io(&t, view->bdev, BDEV_OP_WRITE, 0, offset, length, buffer), 0);
    free(buffer);
}

Test(overlay, none_is_the_export_itself)
{
    struct export *base = open_base(EXPORT_OVERLAY_NONE);
    cr_assert_not(bdev_is_read_only(base->bdev));
    cr_assert_eq(attach(base, NULL), base);
    cr_assert_eq(base->refcount, 2);
    export_unref(base);
    export_unref(base);
}

Test(overlay, ephemeral_views_are_private_and_leave_nothing_behind)
{
    struct export *base = open_base(EXPORT_OVERLAY_EPHEMERAL);
    struct export *a = attach(base, NULL), *b = attach(base, NULL);
    cr_assert_neq(a, b);
    cr_assert(a->private_view && b->private_view);
    cr_assert_eq(a->bdev->size, BASE_SIZE);
    cr_assert_eq(count_files(overlay_dir), 0, "temporary overlays are unlinked at once");

    write_byte(a, 65536 + 100, 3000, 0xa1); /* partial clusters: copy-on-write from the base */
    write_byte(b, 65536, 4096, 0xb2);
    expect_byte(a, 65536 + 100, 3000, 0xa1);
    expect_pattern(a, 65536, 100);
    expect_pattern(a, 65536 + 3100, 4096);
    expect_byte(b, 65536, 4096, 0xb2);
    expect_pattern(b, 0, 65536); /* unallocated: read through to the base */
    export_unref(a);
    export_unref(b);
    cr_assert_eq(base->refcount, 1, "views hold their base until they close");

    struct export *c = attach(base, NULL);
    expect_pattern(c, 0, 2 * 65536); /* a new client starts from the base again */
    export_unref(c);
    export_unref(base);

    /* The base never changed. */
    struct bdev *raw = open_bdev(base_path, BDEV_CACHE_WRITEBACK, BDEV_AIO_THREADS, true);
    uint8_t buffer[4096];
    cr_assert_eq(bdev_pread(raw, buffer, sizeof(buffer), 65536), 0);
    for (size_t i = 0; i < sizeof(buffer); i++)
        cr_assert_eq(buffer[i], pattern_byte(65536 + i));
    bdev_close(raw);
}

Test(overlay, persistent_views_are_shared_per_identity_and_kept)
{
    struct export *base = open_base(EXPORT_OVERLAY_PERSISTENT);
    struct export *m1 = attach(base, "m1"), *again = attach(base, "m1");
    struct export *m2 = attach(base, "iqn.1993-08.org.debian:01:m2");
    cr_assert_eq(m1, again, "one identity, one open overlay");
    cr_assert_neq(m1, m2);
    cr_assert_not(m1->private_view);
    cr_assert_eq(count_files(overlay_dir), 2);

    write_byte(m1, 0, 8192, 0x11);
    expect_byte(again, 0, 8192, 0x11);
    expect_pattern(m2, 0, 8192);
    cr_assert_eq(bdev_flush_blocking(m1->bdev), 0);
    export_unref(m1);
    export_unref(again);
    export_unref(m2);
    threadpool_shutdown(); /* the overlays' caches are written back on the pool */

    struct export *reopened = attach(base, "m1");
    expect_byte(reopened, 0, 8192, 0x11);
    expect_pattern(reopened, 8192, 65536);
    export_unref(reopened);

    char *path = overlay_path(base, "m1");
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    free(path);
    export_unref(base);
}

Test(overlay, persistent_needs_a_valid_identity)
{
    struct export *base = open_base(EXPORT_OVERLAY_PERSISTENT);
    const char *bad[] = {NULL, "", ".hidden", "../escape", "a/b", "white space", "x\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct export *view = NULL;
        char *message = NULL;
        cr_expect_eq(export_attach(base, bad[i], &view, &message), -EINVAL, "identity '%s'",
                     bad[i] ? bad[i] : "(null)");
        cr_expect_not_null(message);
        free(message);
    }
    cr_assert_eq(count_files(overlay_dir), 0);
    cr_assert(overlay_identity_valid("iqn.2004-10.com.example:host-1_a"));
    export_unref(base);
}

/*
 * The last client of an identity leaves and the next arrives at once: the
 * old view is still closing on the pool (holding the image lock) when the
 * new one opens the same file, which must wait for that close, then see
 * everything the old view wrote.
 */
Test(overlay, persistent_reopen_while_the_previous_view_closes)
{
    struct export *base = open_base(EXPORT_OVERLAY_PERSISTENT);
    for (unsigned i = 0; i < 20; i++) {
        struct export *view = attach(base, "fast");
        if (i > 0)
            expect_byte(view, (i - 1) * 65536, 4096, (uint8_t)i);
        write_byte(view, i * 65536, 4096, (uint8_t)(i + 1));
        export_unref(view);
    }
    export_unref(base);
}
