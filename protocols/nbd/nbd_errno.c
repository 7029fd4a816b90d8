#include "protocols/nbd/nbd_errno.h"

#include <errno.h>

#include "protocols/nbd/nbd_wire.h"

uint32_t nbd_error_from_errno(int result)
{
    switch (-result) {
    case 0: return 0;
    case EPERM:
    case EACCES:
    case EROFS: return NBD_EPERM;
    case ENOMEM: return NBD_ENOMEM;
    case EINVAL: return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG: return NBD_ENOSPC;
    case EOVERFLOW: return NBD_EOVERFLOW;
#if EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
    case ENOTSUP: return NBD_ENOTSUP;
    case ESHUTDOWN: return NBD_ESHUTDOWN;
    /* Anything else is a failure of the disk, not of the request. */
    default: return NBD_EIO;
    }
}
