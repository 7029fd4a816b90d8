/*
 * data_buffer: the one buffer type that carries disk data between a
 * protocol, the block layer and the send queue.
 *
 * A read's data is lent to the send queue (no copy); a sparse read lends
 * several slices of one buffer between reply headers, so the buffer is
 * reference-counted and each lent slice holds a reference that the send
 * queue drops once it is written.  Aligned to 4096 so O_DIRECT files can
 * read and write it without bouncing.  The count is not atomic: a buffer
 * belongs to one connection, on one thread; released buffers are kept for
 * reuse by that thread (bounded per size class), so steady-state requests
 * do not allocate.  Release a buffer on the thread that took it.
 */
#ifndef LUNA_COMMON_DATA_BUFFER_H
#define LUNA_COMMON_DATA_BUFFER_H

#include <stddef.h>
#include <stdint.h>

struct data_buffer {
    uint8_t *data;
    size_t size;                     /* bytes asked for */
    size_t capacity;                 /* bytes allocated (a size class) */
    unsigned refs;
    struct data_buffer *next_spare;  /* in the thread's cache of spares */
};

/* A buffer of size bytes (> 0) with one reference; NULL on allocation failure. */
struct data_buffer *data_buffer_new(size_t size);
struct data_buffer *data_buffer_ref(struct data_buffer *buffer);
/* Takes a struct data_buffer *; shaped as a send_queue release callback. */
void data_buffer_unref(void *buffer);

#endif
