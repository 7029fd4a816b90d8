#include "block/iov.h"

#include <string.h>

void iov_zero(const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++)
        memset(iov[i].iov_base, 0, iov[i].iov_len);
}

void iov_advance(struct iovec **iov, int *iovcnt, size_t count)
{
    while (*iovcnt > 0 && count >= (*iov)[0].iov_len) {
        count -= (*iov)[0].iov_len;
        (*iov)++;
        (*iovcnt)--;
    }
    if (*iovcnt > 0 && count > 0) {
        (*iov)[0].iov_base = (char *)(*iov)[0].iov_base + count;
        (*iov)[0].iov_len -= count;
    }
}

int iov_slice(const struct iovec *iov, int iovcnt, uint64_t skip, uint64_t length, struct iovec *out)
{
    int count = 0;
    for (int i = 0; i < iovcnt && length > 0; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        uint64_t take = iov[i].iov_len - skip;
        if (take > length)
            take = length;
        out[count++] = (struct iovec){(char *)iov[i].iov_base + skip, take};
        length -= take;
        skip = 0;
    }
    return count;
}

void iov_copy_in(const struct iovec *iov, int iovcnt, uint64_t skip, const void *buffer, uint64_t length)
{
    const char *from = buffer;
    for (int i = 0; i < iovcnt && length > 0; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        uint64_t take = iov[i].iov_len - skip;
        if (take > length)
            take = length;
        memcpy((char *)iov[i].iov_base + skip, from, take);
        from += take;
        length -= take;
        skip = 0;
    }
}
