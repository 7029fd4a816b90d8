#include "block/qcow2/qcow2_lock.h"

#include <errno.h>
#include <fcntl.h>

enum { PERM_CONSISTENT_READ, PERM_WRITE, PERM_WRITE_UNCHANGED, PERM_RESIZE, PERM_COUNT };

static const char *const permission_names[PERM_COUNT] = {"consistent read", "write", "write unchanged", "resize"};

static int lock_byte(int fd, int byte)
{
    struct flock lock = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
    return fcntl(fd, F_OFD_SETLK, &lock) == 0 ? 0 : -errno;
}

/* 1 when another open file holds a lock on byte, 0 when none, or -errno. */
static int byte_held_elsewhere(int fd, int byte)
{
    struct flock probe = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
    if (fcntl(fd, F_OFD_GETLK, &probe) < 0)
        return -errno;
    return probe.l_type != F_UNLCK;
}

static bool no_locking(int error) { return error == -EINVAL || error == -ENOLCK || error == -EOPNOTSUPP; }

int qcow2_lock(int fd, bool write, struct qcow2_lock_failure *failure)
{
    /* What luna takes, and what it refuses to share (as qemu-nbd and a QEMU backing file do). */
    bool held[PERM_COUNT] = {[PERM_CONSISTENT_READ] = true, [PERM_WRITE] = write};
    bool unshared[PERM_COUNT] = {[PERM_WRITE] = true, [PERM_RESIZE] = true};

    for (int p = 0; p < PERM_COUNT; p++) {
        int bytes[2] = {held[p] ? 100 + p : 0, unshared[p] ? 200 + p : 0};
        for (int i = 0; i < 2; i++) {
            if (!bytes[i])
                continue;
            int rc = lock_byte(fd, bytes[i]);
            if (rc == 0)
                continue;
            if (no_locking(rc))
                return 0;
            if (rc == -EAGAIN || rc == -EACCES) {
                *failure = (struct qcow2_lock_failure){QCOW2_LOCK_BYTE_TAKEN, bytes[i], permission_names[p]};
                return -EBUSY;
            }
            return rc;
        }
    }
    /* Locks are taken first and tested after, so two openers racing cannot both pass. */
    for (int p = 0; p < PERM_COUNT; p++) {
        int rc;
        if (held[p] && (rc = byte_held_elsewhere(fd, 200 + p)) != 0) {
            if (rc < 0)
                return no_locking(rc) ? 0 : rc;
            *failure = (struct qcow2_lock_failure){QCOW2_LOCK_UNSHARED, 200 + p, permission_names[p]};
            return -EBUSY;
        }
        if (unshared[p] && (rc = byte_held_elsewhere(fd, 100 + p)) != 0) {
            if (rc < 0)
                return no_locking(rc) ? 0 : rc;
            *failure = (struct qcow2_lock_failure){QCOW2_LOCK_HELD, 100 + p, permission_names[p]};
            return -EBUSY;
        }
    }
    return 0;
}
