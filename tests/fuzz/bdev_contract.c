#include "bdev_contract.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_EXTENTS 16 /* extents per block_status call */

static const char *target_name = "fuzz";
static bool verbose;
static void (*cleanup_hook)(void);

void bdev_contract_setup(const char *target, bool print_errors, void (*cleanup)(void))
{
    target_name = target;
    verbose = print_errors;
    cleanup_hook = cleanup;
}

void bdev_contract_fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "%s: ", target_name);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    if (cleanup_hook)
        cleanup_hook(); /* the image stays in the input; leave no directory behind */
    abort();
}

void bdev_contract_write_file(const char *path, const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        bdev_contract_fail("open %s: %s", path, strerror(errno));
    for (size_t done = 0; done < size;) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0)
            bdev_contract_fail("write %s: %s", path, n < 0 ? strerror(errno) : "short write");
        done += (size_t)n;
    }
    close(fd);
}

void bdev_contract_check_errno(const char *what, int rc)
{
    if (rc > 0 || rc < -4095)
        bdev_contract_fail("%s returned %d: not 0 or -errno", what, rc);
    if (rc < 0 && verbose)
        fprintf(stderr, "%s: %s: %s\n", target_name, what, strerror(-rc));
}

int bdev_contract_read(struct bdev *bdev, uint8_t *buffer, uint64_t offset, uint64_t length)
{
    if (offset >= bdev->size)
        return 0;
    if (length > bdev->size - offset)
        length = bdev->size - offset;
    int rc = bdev_pread(bdev, buffer, length, offset);
    bdev_contract_check_errno("read", rc);
    return rc;
}

void bdev_contract_status_walk(struct bdev *bdev, uint64_t offset, uint64_t length, unsigned max_calls)
{
    struct bdev_extent extents[MAX_EXTENTS];
    for (unsigned call = 0; call < max_calls && length > 0; call++) {
        memset(extents, 0xa5, sizeof(extents));
        struct bdev_io io = {.op = BDEV_OP_BLOCK_STATUS, .offset = offset, .length = length,
                             .extents = extents, .max_extents = MAX_EXTENTS};
        int rc = bdev_blocking(bdev, &io);
        bdev_contract_check_errno("block_status", rc);
        if (rc < 0)
            return;
        if (io.nr_extents == 0 || io.nr_extents > MAX_EXTENTS)
            bdev_contract_fail("block_status at %llu: %u extents", (unsigned long long)offset, io.nr_extents);
        uint64_t covered = 0;
        for (uint32_t i = 0; i < io.nr_extents; i++) {
            if (extents[i].length == 0 || extents[i].length > length - covered)
                bdev_contract_fail("block_status at %llu+%llu: extent %u of length %llu (covered %llu)",
                                   (unsigned long long)offset, (unsigned long long)length, i,
                                   (unsigned long long)extents[i].length, (unsigned long long)covered);
            if (extents[i].flags & ~(uint32_t)(BDEV_EXTENT_HOLE | BDEV_EXTENT_ZERO))
                bdev_contract_fail("block_status: unknown extent flags %#x", extents[i].flags);
            covered += extents[i].length;
        }
        offset += covered;
        length -= covered;
    }
}

void bdev_contract_read_pass(struct bdev *bdev, uint8_t *buffer, uint64_t read_length, uint64_t status_window,
                             unsigned max_calls)
{
    uint64_t size = bdev->size;
    if (size == 0)
        return;
    uint64_t cluster = bdev->limits.optimal_io_size ? bdev->limits.optimal_io_size : 512;
    uint64_t middle = size / 2;
    bdev_contract_read(bdev, buffer, 0, read_length);
    bdev_contract_read(bdev, buffer, middle, read_length);
    /* Across the first cluster boundary at or after the middle. */
    uint64_t boundary = (middle / cluster + 1) * cluster;
    if (boundary < size)
        bdev_contract_read(bdev, buffer, boundary - 100 < boundary ? boundary - 100 : 0, 200);
    bdev_contract_read(bdev, buffer, size > read_length ? size - read_length : 0, read_length);
    bdev_contract_read(bdev, buffer, size - 1, 1);
    bdev_contract_status_walk(bdev, 0, size < status_window ? size : status_window, max_calls);
    if (size > status_window)
        bdev_contract_status_walk(bdev, size - (1 << 20), 1 << 20, max_calls);
}
