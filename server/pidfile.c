#include "pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int pidfile_write(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    char text[32];
    int len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    ssize_t written = write(fd, text, (size_t)len);
    int ret = written == len ? 0 : (written < 0 ? -errno : -EIO);
    if (close(fd) < 0 && ret == 0)
        ret = -errno;
    if (ret < 0)
        unlink(path);
    return ret;
}

void pidfile_remove(const char *path)
{
    if (path)
        unlink(path);
}
