/*
 * Shared by the protocol session tests (NBD, iSCSI): what a session runs
 * in, the part of a server connection that is not the protocol.  A real
 * libev loop and aio_context, an export table over temp raw files, the
 * send queue the session writes to, a wake counter, and a reader that
 * collects the exact bytes the session queued, as a socket would get them.
 * Built on test_block_util (loop, temp files).
 */
#ifndef LUNA_TESTS_TEST_SESSION_UTIL_H
#define LUNA_TESTS_TEST_SESSION_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/bdev.h"
#include "protocols/session.h"

struct session_world {
    struct ev_loop *loop;
    struct aio_context *ctx;
    struct export_table *table;
    struct send_queue *out;
    unsigned wakes; /* calls of session_world_ops.wake */

    char *paths[4]; /* the exports' files, removed by session_world_fini */
    size_t path_count;

    uint8_t *output; /* everything the session queued so far */
    size_t output_length, output_position, output_capacity;
};

/* Give the session these ops with the world as opaque: wake only counts. */
extern const struct session_ops session_world_ops;

/* The contents of pattern-filled exports. */
uint8_t session_pattern_byte(uint64_t offset);

/* Loop, aio_context, an empty export table and the send queue. */
void session_world_init(struct session_world *w);

struct session_export {
    const char *name;
    const char *description;  /* may be NULL */
    uint64_t size;
    bool pattern;             /* filled with session_pattern_byte; else sparse */
    bool readonly;
    enum bdev_aio_engine aio; /* 0: the default */
};

/* Opens it over a fresh temp file and adds it to the table; returns the file's path (the world keeps it). */
const char *session_world_add_export(struct session_world *w, const struct session_export *export);

/*
 * Ends the session (may be NULL) in server/connection.c's order: the queue
 * first (it may lend the session's buffers), then the session; then lets
 * detached completions finish and frees the rest.
 */
void session_world_fini(struct session_world *w, const struct session_protocol *protocol, void *session);

/*
 * The next n bytes the session queued (asserts they exist); valid until
 * output is pulled again (the next take or output_left may move the buffer).
 */
const uint8_t *session_world_take(struct session_world *w, size_t n);
/* Queued bytes not yet taken. */
size_t session_world_output_left(struct session_world *w);

#endif
