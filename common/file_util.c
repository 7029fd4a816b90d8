#include "common/file_util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int file_pread_full(int fd, void *buffer, size_t length, uint64_t offset)
{
    uint8_t *p = buffer;
    while (length) {
        ssize_t n = pread(fd, p, length, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) {
            memset(p, 0, length);
            return 0;
        }
        p += n;
        length -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

int file_pwrite_full(int fd, const void *buffer, size_t length, uint64_t offset)
{
    const uint8_t *p = buffer;
    while (length) {
        ssize_t n = pwrite(fd, p, length, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        length -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

int file_make_directories(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    int rc = 0;
    for (char *slash = copy + 1;; slash++) {
        bool end = *slash == '\0';
        if (*slash != '/' && !end)
            continue;
        *slash = '\0';
        if (mkdir(copy, 0755) < 0 && errno != EEXIST) {
            rc = -errno;
            break;
        }
        if (end)
            break;
        *slash = '/';
    }
    free(copy);
    return rc;
}
