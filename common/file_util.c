#include "common/file_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
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

int file_sync_directory(const char *directory)
{
    int fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* The directory part of path ("." for a bare name), malloc'd; NULL out of memory. */
static char *directory_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

int file_replace_contents(const char *path, const void *data, size_t length)
{
    char *temporary = NULL;
    char *directory = directory_of(path);
    if (!directory || asprintf(&temporary, "%s.tmp", path) < 0) {
        free(directory);
        return -ENOMEM;
    }
    int rc = 0;
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
    } else {
        rc = file_pwrite_full(fd, data, length, 0);
        if (rc == 0 && fsync(fd) < 0)
            rc = -errno;
        if (close(fd) < 0 && rc == 0)
            rc = -errno;
        if (rc == 0 && rename(temporary, path) < 0)
            rc = -errno;
        if (rc < 0)
            unlink(temporary);
        else
            rc = file_sync_directory(directory);
    }
    free(temporary);
    free(directory);
    return rc;
}

int file_remove_durably(const char *path)
{
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    char *directory = directory_of(path);
    if (!directory)
        return -ENOMEM;
    int rc = file_sync_directory(directory);
    free(directory);
    return rc;
}
