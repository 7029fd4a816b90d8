/*
 * Shared by the block tests: a real libev loop with an aio_context, temp
 * files, and synchronous wrappers that submit one request and drain.
 */
#ifndef LUNA_TESTS_TEST_BLOCK_UTIL_H
#define LUNA_TESTS_TEST_BLOCK_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/aio.h"
#include "block/bdev.h"

struct test_loop {
    struct ev_loop *loop;
    struct aio_context *ctx;
};

void test_loop_init(struct test_loop *t);
void test_loop_fini(struct test_loop *t);

/* A temp file under /tmp of size bytes (sparse); returns a malloc'd path. */
char *temp_file(uint64_t size);
/* Same, filled with pattern_byte(offset). */
char *temp_file_with_pattern(uint64_t size);
/* Same, filled with byte_at(offset): the protocol tests use a pattern of their own. */
char *temp_file_filled(uint64_t size, uint8_t (*byte_at)(uint64_t offset));
uint8_t pattern_byte(uint64_t offset);

struct bdev *open_bdev(const char *path, enum bdev_cache_mode cache, enum bdev_aio_engine aio,
                       bool readonly);

/*
 * One request through bdev_submit, drained.  Asserts the completion ran
 * exactly once, on this thread, outside bdev_submit.  Returns io->result.
 */
int run_io(struct test_loop *t, struct bdev *bdev, enum bdev_op op, uint32_t flags, uint64_t offset,
           uint64_t length, void *buffer);
int run_block_status(struct test_loop *t, struct bdev *bdev, uint64_t offset, uint64_t length,
                     struct bdev_extent *extents, uint32_t max_extents, uint32_t *nr_extents);

/* Read the file directly (not through the bdev) into buffer; asserts success. */
void read_file_directly(const char *path, uint64_t offset, void *buffer, uint64_t length);
/* pwrite behind the bdev's back (another writer of the file). */
void write_file_directly(const char *path, uint64_t offset, const void *buffer, uint64_t length);
/* True when length bytes at buffer are all zero. */
bool all_zero(const void *buffer, uint64_t length);

/* A 4096-aligned buffer (free with free). */
void *test_aligned_alloc(size_t size);

extern const enum bdev_cache_mode all_cache_modes[5];
extern const enum bdev_aio_engine both_engines[2];

#endif
