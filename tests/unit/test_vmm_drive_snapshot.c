/*
 * -drive snapshot=on (vmm/drive_snapshot.h): the guest's writes land in a
 * temporary qcow2 overlay; the disk below keeps its bytes, and the overlay
 * leaves no file behind.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/bdev.h"
#include "block/threadpool.h"
#include "vmm/drive_snapshot.h"

#define DISK_SIZE (4u << 20)

static char directory[] = "/tmp/test-vmm-snapshot-XXXXXX";
static char disk_path[128];

static void setup(void)
{
    cr_assert_not_null(mkdtemp(directory));
    cr_assert_eq(setenv("TMPDIR", directory, 1), 0);
    snprintf(disk_path, sizeof(disk_path), "%s/disk.raw", directory);
    FILE *disk = fopen(disk_path, "w");
    cr_assert_not_null(disk);
    for (unsigned i = 0; i < DISK_SIZE; i++)
        fputc((int)(i % 251), disk);
    cr_assert_eq(fclose(disk), 0);
}

static unsigned files_in_directory(void)
{
    DIR *dir = opendir(directory);
    cr_assert_not_null(dir);
    unsigned count = 0;
    for (struct dirent *entry; (entry = readdir(dir));)
        count += entry->d_name[0] != '.';
    closedir(dir);
    return count;
}

static void teardown(void)
{
    unlink(disk_path);
    rmdir(directory);
    threadpool_shutdown();
}

TestSuite(vmm_drive_snapshot, .init = setup, .fini = teardown);

Test(vmm_drive_snapshot, writes_stay_in_the_overlay)
{
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = disk_path;
    options.format = BDEV_FORMAT_RAW;
    options.cache = BDEV_CACHE_NONE; /* the disk's own mode: the scratch overlay does not inherit it */
    struct bdev *base, *overlay;
    char *message = NULL;
    cr_assert_eq(drive_snapshot_open(&options, &base, &overlay, &message), 0, "%s", message ? message : "");
    cr_assert(bdev_is_read_only(base), "the disk below is opened read-only");
    cr_assert(!bdev_is_read_only(overlay));
    cr_assert_eq(overlay->size, DISK_SIZE);
    cr_assert_eq(files_in_directory(), 1, "the overlay is unlinked once open: only disk.raw");

    static uint8_t block[65536], read_back[65536];
    memset(block, 0xa5, sizeof(block));
    cr_assert_eq(bdev_pwrite(overlay, block, sizeof(block), 65536, 0), 0);
    cr_assert_eq(bdev_pread(overlay, read_back, sizeof(read_back), 65536), 0);
    cr_assert_eq(memcmp(read_back, block, sizeof(block)), 0, "the guest reads its write");
    cr_assert_eq(bdev_pread(overlay, read_back, 512, 0), 0);
    for (unsigned i = 0; i < 512; i++)
        cr_assert_eq(read_back[i], i % 251, "unwritten ranges read through to the disk");
    bdev_close(overlay);
    bdev_close(base);

    FILE *disk = fopen(disk_path, "r");
    cr_assert_not_null(disk);
    cr_assert_eq(fseek(disk, 65536, SEEK_SET), 0);
    cr_assert_eq(fread(read_back, 1, sizeof(read_back), disk), sizeof(read_back));
    fclose(disk);
    for (unsigned i = 0; i < sizeof(read_back); i++)
        cr_assert_eq(read_back[i], (65536 + i) % 251, "the disk file is unchanged");
}

Test(vmm_drive_snapshot, missing_disk_is_an_error_naming_it)
{
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = "/nonexistent/lunavm-disk.raw";
    struct bdev *base = NULL, *overlay = NULL;
    char *message = NULL;
    cr_assert_lt(drive_snapshot_open(&options, &base, &overlay, &message), 0);
    cr_assert(message && strstr(message, "/nonexistent/lunavm-disk.raw"), "%s", message ? message : "(none)");
    free(message);
    cr_assert_eq(files_in_directory(), 1, "no overlay left behind");
}
