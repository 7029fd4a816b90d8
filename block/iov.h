/*
 * iov: the scatter-gather helpers every driver needs when one request's
 * iovec must be cut into the pieces its mapping splits it into.
 */
#ifndef LUNA_BLOCK_IOV_H
#define LUNA_BLOCK_IOV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Zero every segment. */
void iov_zero(const struct iovec *iov, int iovcnt);

/* Drop the first count bytes of *iov (in place: the array is modified). */
void iov_advance(struct iovec **iov, int *iovcnt, size_t count);

/*
 * Describe bytes [skip, skip + length) of iov in out (room for iovcnt
 * entries, which always suffices).  Returns the number of entries used.
 */
int iov_slice(const struct iovec *iov, int iovcnt, uint64_t skip, uint64_t length, struct iovec *out);

/* Copy length bytes of buffer into iov starting skip bytes in. */
void iov_copy_in(const struct iovec *iov, int iovcnt, uint64_t skip, const void *buffer, uint64_t length);

#endif
