/*
 * fuzz_foreign_open: libFuzzer target for the read-only foreign image
 * drivers (block/foreign: vmdk, vdi, vpc).
 *
 * The input is an image file, written to a per-process temporary
 * directory and opened read-only with each of the three formats in turn
 * (each parses the same bytes its own way: a fixed VHD is only found by
 * the vpc driver reading the footer at the end).  When an open succeeds:
 * reads at the start, the middle, across a cluster boundary and at the
 * end; block_status over at most the first 64 MiB (and the last MiB); a
 * write, which must fail with -EROFS.  Then bdev_close and
 * threadpool_shutdown(), so LeakSanitizer sees each input alone.
 *
 * What makes an input fail: sanitizer findings, leaks, results that are
 * not 0 or -errno, block_status answers that break the bdev.h contract, a
 * write that does not fail with -EROFS, a size above INT64_MAX.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bdev_contract.h"
#include "block/bdev.h"
#include "block/threadpool.h"
#include "common/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    READ_LENGTH = 8192,    /* per read */
    MAX_STATUS_CALLS = 64, /* block_status calls per window */
    MAX_INPUT = 4 << 20,   /* larger inputs are not images worth writing out */
};
#define STATUS_WINDOW (UINT64_C(64) << 20) /* bytes of the virtual disk block_status looks at */

static char directory[4096];
static char image_path[4200];
static bool ready;
static bool verbose;

static void cleanup(void)
{
    unlink(image_path);
    rmdir(directory);
}

static void setup(void)
{
    verbose = getenv("LUNA_FUZZ_VERBOSE") != NULL;
    log_set_level(verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
    bdev_contract_setup("fuzz_foreign_open", verbose, cleanup);
    const char *tmp = getenv("TMPDIR");
    snprintf(directory, sizeof(directory), "%s/luna-fuzz-foreign-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(directory))
        bdev_contract_fail("mkdtemp %s: %s", directory, strerror(errno));
    snprintf(image_path, sizeof(image_path), "%s/image", directory);
    atexit(cleanup);
    ready = true;
}

static void read_only_pass(enum bdev_format format)
{
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = image_path;
    options.format = format;
    options.readonly = true;
    options.aio = BDEV_AIO_THREADS;
    struct bdev *bdev;
    char *message = NULL;
    int rc = bdev_open(&options, &bdev, &message);
    if (rc < 0 && verbose)
        fprintf(stderr, "fuzz_foreign_open: open as %s: %s\n", bdev_format_name(format), message ? message : "?");
    free(message);
    if (rc < 0) {
        threadpool_shutdown();
        return;
    }
    uint64_t size = bdev->size;
    if (size > INT64_MAX)
        bdev_contract_fail("bdev size %llu above INT64_MAX", (unsigned long long)size);
    uint8_t *buffer = malloc(READ_LENGTH);
    if (!buffer)
        bdev_contract_fail("out of memory");
    bdev_contract_read_pass(bdev, buffer, READ_LENGTH, STATUS_WINDOW, MAX_STATUS_CALLS);
    if (size > 0) {
        memset(buffer, 0x5a, 512);
        rc = bdev_pwrite(bdev, buffer, size < 512 ? size : 512, 0, 0);
        if (rc != -EROFS)
            bdev_contract_fail("a write to a read-only %s image returned %d, not -EROFS", bdev_format_name(format),
                               rc);
    }
    free(buffer);
    bdev_close(bdev);
    threadpool_shutdown();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        setup();
    if (size > MAX_INPUT)
        return 0;
    bdev_contract_write_file(image_path, data, size);
    static const enum bdev_format formats[] = {BDEV_FORMAT_VMDK, BDEV_FORMAT_VDI, BDEV_FORMAT_VPC};
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
        read_only_pass(formats[i]);
    unlink(image_path);
    return 0;
}
