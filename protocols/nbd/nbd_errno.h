/*
 * nbd_errno: the block layer's -errno results as NBD reply error values.
 *
 * The protocol allows only a handful of error values; everything else a
 * disk can report is folded into the closest one, as the spec asks
 * (EDQUOT and EFBIG are "no space", EROFS is "not permitted").
 */
#ifndef LUNA_PROTOCOLS_NBD_ERRNO_H
#define LUNA_PROTOCOLS_NBD_ERRNO_H

#include <stdint.h>

/* result: 0 or a negative errno.  Returns 0 or an NBD_E* value. */
uint32_t nbd_error_from_errno(int result);

#endif
