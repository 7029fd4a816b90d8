/*
 * bdev_contract: what the image-driver fuzz targets share: failing an
 * input with a message (and the target's clean-up), writing the input out,
 * and bdev calls whose answers are checked against block/bdev.h (results
 * are 0 or -errno; block_status extents are non-empty, inside the range,
 * with known flags).  Bounds are the caller's: these look only where told.
 */
#ifndef LUNA_TESTS_FUZZ_BDEV_CONTRACT_H
#define LUNA_TESTS_FUZZ_BDEV_CONTRACT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/bdev.h"

/* The target's name (message prefix), whether to print every error, and what to undo before abort(). */
void bdev_contract_setup(const char *target, bool verbose, void (*cleanup)(void));

void bdev_contract_fail(const char *format, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Write data to path (created or truncated); fails the input on error. */
void bdev_contract_write_file(const char *path, const uint8_t *data, size_t size);

/* rc must be 0 or -errno; printed when verbose. */
void bdev_contract_check_errno(const char *what, int rc);

/* Read [offset, offset + length) clipped to the disk; 0 or -errno. */
int bdev_contract_read(struct bdev *bdev, uint8_t *buffer, uint64_t offset, uint64_t length);

/* block_status over [offset, offset + length): at most max_calls calls, every answer checked. */
void bdev_contract_status_walk(struct bdev *bdev, uint64_t offset, uint64_t length, unsigned max_calls);

/*
 * The read-only look every image target takes: reads of read_length at the
 * start, the middle and the end, one across the first cluster boundary
 * after the middle, the last byte; block_status over at most the first
 * status_window bytes (and the last MiB).  buffer holds read_length bytes.
 */
void bdev_contract_read_pass(struct bdev *bdev, uint8_t *buffer, uint64_t read_length, uint64_t status_window,
                             unsigned max_calls);

#endif
