/*
 * nbd_buffer: page-aligned data buffers shared between a request and the
 * send queue.
 *
 * A read's data is lent to the send queue (no copy); a sparse read lends
 * several slices of one buffer between reply headers, so the buffer is
 * reference-counted and each lent slice holds a reference that the send
 * queue drops once it is written.  Aligned to 4096 so O_DIRECT files can
 * read and write it without bouncing.  Single-threaded, like a session.
 */
#ifndef LUNA_PROTOCOLS_NBD_BUFFER_H
#define LUNA_PROTOCOLS_NBD_BUFFER_H

#include <stddef.h>
#include <stdint.h>

struct nbd_buffer {
    uint8_t *data;
    size_t size;
    unsigned refs;
};

/* A buffer of size bytes (> 0) with one reference; NULL on allocation failure. */
struct nbd_buffer *nbd_buffer_new(size_t size);
struct nbd_buffer *nbd_buffer_ref(struct nbd_buffer *buffer);
/* Takes a struct nbd_buffer *; shaped as a send_queue release callback. */
void nbd_buffer_unref(void *buffer);

#endif
