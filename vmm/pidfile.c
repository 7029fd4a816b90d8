#include "vmm/pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error_message.h"

int pidfile_create(const char *path, char **error_message)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return error_message_set(error_message, -errno, "-pidfile %s: %s", path, strerror(errno));
    /* An open-file-description lock: unlike a POSIX one, closing some other descriptor
     * of the same file elsewhere in lunavm cannot drop it. */
    struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_OFD_SETLK, &lock) < 0) {
        int error = errno;
        close(fd);
        /* Locked: another lunavm (or QEMU) runs with this pid file; it must not be clobbered. */
        if (error == EAGAIN || error == EACCES)
            return error_message_set(error_message, -EBUSY, "-pidfile %s: in use by another running process",
                                     path);
        return error_message_set(error_message, -error, "-pidfile %s: cannot lock it: %s", path, strerror(error));
    }
    char text[24];
    int length = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    /* Truncate only under the lock: the previous owner's file stays intact until we own it. */
    errno = 0; /* a short write sets none */
    if (ftruncate(fd, 0) < 0 || write(fd, text, (size_t)length) != length) {
        int error = errno ? errno : EIO;
        close(fd);
        return error_message_set(error_message, -error, "-pidfile %s: cannot write it: %s", path, strerror(error));
    }
    return fd;
}

char *pidfile_absolute_path(const char *path)
{
    if (path[0] == '/')
        return strdup(path);
    char *cwd = getcwd(NULL, 0);
    if (!cwd)
        return NULL;
    char *absolute = NULL;
    if (asprintf(&absolute, "%s/%s", cwd, path) < 0)
        absolute = NULL;
    free(cwd);
    return absolute;
}

void pidfile_remove(const char *path, int fd)
{
    /* Unlink before closing: once the lock goes, another process may take the name. */
    unlink(path);
    close(fd);
}
