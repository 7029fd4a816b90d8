/*
 * fuzz_qcow2_open: libFuzzer target for the qcow2 driver's open, read and
 * write paths.
 *
 * The input is an image file.  It is written to a file in a per-process
 * temporary directory and opened with bdev_open (qcow2, cache=writeback,
 * aio=threads) twice:
 *
 *  - read-only: reads at the start, in the middle, across a cluster
 *    boundary and at the end, then block_status over the disk (a bounded
 *    number of calls and extents, each result checked against the
 *    bdev.h contract);
 *  - read-write, on a fresh copy of the input: a few writes (each read
 *    back: the bytes must be the ones written), write_zeroes, discard,
 *    flush, close.
 *
 * After each open, bdev_close and threadpool_shutdown(), so no thread,
 * descriptor or allocation outlives the input and LeakSanitizer sees
 * everything.
 *
 * Backing files.  A backing name in the input must never reach a host
 * file, but refusing such images would leave the read-through and
 * copy-on-write paths unfuzzed.  So before opening, the target decodes the
 * header with qcow2_image_header_decode and, when it names a backing
 * file, rewrites the name to "b" (backing_file_size 1, first name byte
 * 'b'): relative names resolve against the image's directory, where "b"
 * is a raw file the target made (a pattern, with an unaligned size).  The
 * backing format extension is left alone: "qcow2" or "host_device" on
 * that file fail to open, which is fine.  When the decode fails the driver
 * fails the same way before it ever looks at the name (it uses the same
 * function on the same bytes), so nothing else needs rewriting.
 *
 * External data files, likewise: a data file name in the input is
 * overwritten in place with as many 'd's (same length, so the extension
 * area keeps its layout), and a sparse file of that name is made beside the
 * image for the driver to open; an input whose name cannot be rewritten so
 * is not opened at all.
 *
 * Cost bounds are the target's, not the driver's: reads and block_status
 * look at no more than READ_LENGTH bytes per read and STATUS_WINDOW bytes
 * of the virtual disk, whatever size the header claims.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bdev_contract.h"
#include "block/bdev.h"
#include "block/qcow2/qcow2_format.h"
#include "block/threadpool.h"
#include "common/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    READ_LENGTH = 8192,               /* per read */
    MAX_STATUS_CALLS = 64,            /* block_status calls per window */
    BACKING_SIZE = 96 * 1024 + 100,   /* unaligned: reads past its end are zeroes */
    MAX_INPUT = 4 << 20,              /* larger inputs are not images worth writing out */
};
#define STATUS_WINDOW (UINT64_C(64) << 20) /* bytes of the virtual disk block_status looks at */

static char directory[4096];
static char image_path[4200];
static char backing_path[4200];
static char data_path[4400]; /* "" when the input names no data file */
static bool ready;
static bool verbose;
/* LUNA_FUZZ_QCOW2_NO_WRITE_ORACLES: skip the read-back and header checks (to look past a known bug). */
static bool write_oracles = true;

static void cleanup(void)
{
    unlink(image_path);
    unlink(backing_path);
    if (data_path[0])
        unlink(data_path);
    rmdir(directory);
}

static uint8_t backing_byte(uint64_t offset) { return (uint8_t)(offset * 7 + offset / 512 + 1); }

static void setup(void)
{
    verbose = getenv("LUNA_FUZZ_VERBOSE") != NULL;
    log_set_level(verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
    write_oracles = getenv("LUNA_FUZZ_QCOW2_NO_WRITE_ORACLES") == NULL;
    bdev_contract_setup("fuzz_qcow2_open", verbose, cleanup);
    const char *tmp = getenv("TMPDIR");
    snprintf(directory, sizeof(directory), "%s/luna-fuzz-qcow2-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(directory))
        bdev_contract_fail("mkdtemp %s: %s", directory, strerror(errno));
    snprintf(image_path, sizeof(image_path), "%s/image.qcow2", directory);
    snprintf(backing_path, sizeof(backing_path), "%s/b", directory);
    uint8_t *backing = malloc(BACKING_SIZE);
    if (!backing)
        bdev_contract_fail("out of memory");
    for (size_t i = 0; i < BACKING_SIZE; i++)
        backing[i] = backing_byte(i);
    bdev_contract_write_file(backing_path, backing, BACKING_SIZE);
    free(backing);
    atexit(cleanup);
    ready = true;
}

/*
 * The input as the file to open: a copy whose backing name (if any) is "b".
 * Returns false when the header decodes badly (the driver will refuse it
 * for the same reason, before any backing file is involved).
 */
static bool sanitize_backing(uint8_t *image, size_t size)
{
    struct qcow2_image_header decoded;
    if (qcow2_image_header_decode(image, size, size, &decoded, NULL) < 0)
        return false;
    bool has_backing = decoded.backing_file != NULL;
    uint64_t name_offset = decoded.header.backing_file_offset;
    qcow2_image_header_clear(&decoded);
    if (!has_backing)
        return true;
    qcow2_put_be32(image + 16, 1);
    image[name_offset] = 'b';
    /* The rewrite must leave a header the driver reads as naming "b", or this target is wrong. */
    if (qcow2_image_header_decode(image, size, size, &decoded, NULL) < 0 || !decoded.backing_file ||
        strcmp(decoded.backing_file, "b") != 0)
        bdev_contract_fail("rewriting the backing file name did not give \"b\"");
    qcow2_image_header_clear(&decoded);
    return true;
}

/*
 * Give the input's data file name (if any) a harmless spelling: the same
 * number of 'd's, found as the extension that holds it.  Sets data_path
 * (and makes the file) when there is one.  Returns false when the header
 * names a data file this cannot rewrite: the input must not be opened.
 */
static bool sanitize_data_file(uint8_t *image, size_t size)
{
    data_path[0] = '\0';
    struct qcow2_image_header decoded;
    if (qcow2_image_header_decode(image, size, size, &decoded, NULL) < 0)
        return true; /* refused before any data file is looked at */
    char *name = decoded.data_file;
    decoded.data_file = NULL;
    qcow2_image_header_clear(&decoded);
    if (!name)
        return true;
    size_t length = strlen(name);
    uint8_t pattern[8];
    qcow2_put_be32(pattern, QCOW2_EXT_DATA_FILE);
    qcow2_put_be32(pattern + 4, (uint32_t)length);
    bool rewritten = false;
    for (size_t at = 0; !rewritten && at + 8 + length <= size; at++) {
        if (memcmp(image + at, pattern, 8) == 0 && memcmp(image + at + 8, name, length) == 0) {
            memset(image + at + 8, 'd', length);
            rewritten = true;
        }
    }
    free(name);
    if (!rewritten || qcow2_image_header_decode(image, size, size, &decoded, NULL) < 0)
        return false;
    bool harmless = decoded.data_file && strspn(decoded.data_file, "d") == strlen(decoded.data_file);
    qcow2_image_header_clear(&decoded);
    if (!harmless)
        return false;
    if (length <= 255) {
        int prefix = snprintf(data_path, sizeof(data_path), "%s/", directory);
        memset(data_path + prefix, 'd', length);
        data_path[(size_t)prefix + length] = '\0';
        int fd = open(data_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
            bdev_contract_fail("create %s: %s", data_path, strerror(errno));
        close(fd);
    }
    return true;
}

static int open_image(bool readonly, struct bdev **bdev)
{
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = image_path;
    options.format = BDEV_FORMAT_QCOW2;
    options.readonly = readonly;
    options.cache = BDEV_CACHE_WRITEBACK;
    options.aio = BDEV_AIO_THREADS;
    char *message = NULL;
    int rc = bdev_open(&options, bdev, &message);
    if (rc < 0 && verbose)
        fprintf(stderr, "fuzz_qcow2_open: open (%s): %s\n", readonly ? "ro" : "rw", message ? message : "?");
    if (rc >= 0 && (*bdev)->size > INT64_MAX)
        bdev_contract_fail("bdev size %llu above INT64_MAX", (unsigned long long)(*bdev)->size);
    free(message);
    return rc;
}

static void read_only_pass(void)
{
    struct bdev *bdev;
    if (open_image(true, &bdev) < 0) {
        /* A failed open closes what it opened on the pool: wait for it, or it looks like a leak. */
        threadpool_shutdown();
        return;
    }
    uint8_t *buffer = malloc(READ_LENGTH);
    if (!buffer)
        bdev_contract_fail("out of memory");
    bdev_contract_read_pass(bdev, buffer, READ_LENGTH, STATUS_WINDOW, MAX_STATUS_CALLS);
    /* Where the backing file (if any) ends: part data, part zeroes. */
    if (bdev->size > 0)
        bdev_contract_read(bdev, buffer, BACKING_SIZE - 50, 100);
    free(buffer);
    bdev_close(bdev);
    threadpool_shutdown();
}

/* Write length bytes of a pattern at offset (inside one cluster) and read them back. */
static void write_and_check(struct bdev *bdev, uint8_t *buffer, uint8_t *check, uint64_t offset, uint64_t length,
                            uint8_t seed)
{
    if (offset >= bdev->size)
        return;
    if (length > bdev->size - offset)
        length = bdev->size - offset;
    for (uint64_t i = 0; i < length; i++)
        buffer[i] = (uint8_t)(seed + i * 31);
    int rc = bdev_pwrite(bdev, buffer, length, offset, 0);
    bdev_contract_check_errno("write", rc);
    if (rc < 0)
        return;
    rc = bdev_pread(bdev, check, length, offset);
    bdev_contract_check_errno("read after write", rc);
    if (rc == 0 && write_oracles && memcmp(buffer, check, length) != 0)
        bdev_contract_fail("read after write at %llu+%llu returned other bytes", (unsigned long long)offset,
             (unsigned long long)length);
}

static void zero_or_discard(struct bdev *bdev, enum bdev_op op, uint32_t flags, uint64_t offset, uint64_t length)
{
    if (offset >= bdev->size)
        return;
    if (length > bdev->size - offset)
        length = bdev->size - offset;
    struct bdev_io io = {.op = op, .flags = flags, .offset = offset, .length = length};
    bdev_contract_check_errno(op == BDEV_OP_DISCARD ? "discard" : "write_zeroes", bdev_blocking(bdev, &io));
}

/* Returns whether the image opened. */
static bool read_write_pass(void)
{
    struct bdev *bdev;
    if (open_image(false, &bdev) < 0) {
        threadpool_shutdown();
        return false;
    }
    uint64_t size = bdev->size;
    uint64_t cluster = bdev->limits.optimal_io_size ? bdev->limits.optimal_io_size : 512;
    uint8_t *buffer = malloc(READ_LENGTH), *check = malloc(READ_LENGTH);
    if (!buffer || !check)
        bdev_contract_fail("out of memory");
    if (size > 0) {
        uint64_t middle = size / 2 / cluster * cluster;
        /* Partial clusters (copy-on-write of the rest), then a whole one. */
        uint64_t first = cluster < 1000 ? cluster : 1000;
        write_and_check(bdev, buffer, check, 100 % cluster, first - 100 % cluster, 1);
        write_and_check(bdev, buffer, check, middle, cluster < READ_LENGTH ? cluster : READ_LENGTH, 2);
        /* The last bytes of the disk, inside its last cluster. */
        uint64_t last_cluster = (size - 1) / cluster * cluster;
        uint64_t tail = size > 300 && size - 300 > last_cluster ? size - 300 : last_cluster;
        write_and_check(bdev, buffer, check, tail, size - tail < 300 ? size - tail : 300, 3);
        /* Not checked: it spans a cluster boundary, which a corrupt image may map to one host cluster. */
        uint64_t boundary = middle + cluster;
        if (boundary < size && boundary >= 512) {
            memset(buffer, 0x5a, 1024);
            uint64_t length = 1024 < size - (boundary - 512) ? 1024 : size - (boundary - 512);
            bdev_contract_check_errno("write", bdev_pwrite(bdev, buffer, length, boundary - 512, 0));
        }
        zero_or_discard(bdev, BDEV_OP_WRITE_ZEROES, BDEV_MAY_UNMAP, 0, 3 * cluster);
        zero_or_discard(bdev, BDEV_OP_WRITE_ZEROES, BDEV_FAST_ONLY, middle, 2 * cluster);
        zero_or_discard(bdev, BDEV_OP_DISCARD, 0, middle + cluster / 2, 2 * cluster);
        bdev_contract_check_errno("flush", bdev_flush_blocking(bdev));
        bdev_contract_read(bdev, buffer, 0, READ_LENGTH);
        bdev_contract_status_walk(bdev, 0, size < STATUS_WINDOW ? size : STATUS_WINDOW, MAX_STATUS_CALLS);
    }
    free(buffer);
    free(check);
    bdev_close(bdev);
    threadpool_shutdown();
    return true;
}

/*
 * Whatever the image holds, the driver has no business changing its magic,
 * version, cluster size or virtual size: a write there means it put data or
 * a table over the header.
 */
static void check_header_kept(const uint8_t *image, size_t size)
{
    if (!write_oracles || size < 32)
        return;
    uint8_t now[32];
    int fd = open(image_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        bdev_contract_fail("open %s: %s", image_path, strerror(errno));
    ssize_t n = pread(fd, now, sizeof(now), 0);
    close(fd);
    if (n != (ssize_t)sizeof(now))
        bdev_contract_fail("the image file lost its header (%zd bytes left)", n);
    if (memcmp(now, image, 8) != 0 || memcmp(now + 20, image + 20, 12) != 0)
        bdev_contract_fail("the read-write pass overwrote the header "
                           "(magic, version, cluster_bits or size changed)");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        setup();
    if (size > MAX_INPUT)
        return 0;
    uint8_t *image = malloc(size ? size : 1);
    if (!image)
        bdev_contract_fail("out of memory");
    memcpy(image, data, size);
    /* Inputs whose header fails to decode still go to the driver: its error paths are under test too. */
    sanitize_backing(image, size);
    if (!sanitize_data_file(image, size)) {
        free(image);
        return 0;
    }

    bdev_contract_write_file(image_path, image, size);
    read_only_pass();
    /* A fresh copy: the read-write pass must not see what the read-only one did (nothing, it should be). */
    bdev_contract_write_file(image_path, image, size);
    if (read_write_pass())
        check_header_kept(image, size);
    unlink(image_path);
    if (data_path[0])
        unlink(data_path);
    free(image);
    return 0;
}
