/*
 * qcow2_lock: image locking as QEMU does it, so that lunad, luna-img and
 * QEMU's tools keep each other from writing an image another one uses.
 *
 * QEMU locks bytes of the image file with open file description locks,
 * all shared (F_RDLCK): byte 100+p for each permission p it holds and byte
 * 200+p for each permission it refuses to share with other openers; then it
 * tests (F_OFD_GETLK) whether another opener holds what conflicts: a
 * permission it refuses to share (100+p), or a refusal of a permission it
 * holds (200+p).  Permissions: 0 consistent read, 1 write, 2 write
 * unchanged, 3 resize.  The locks belong to the open file and go with it.
 */
#ifndef LUNA_BLOCK_QCOW2_LOCK_H
#define LUNA_BLOCK_QCOW2_LOCK_H

#include <stdbool.h>

/* Why a lock was refused, in QEMU's terms (for its messages). */
struct qcow2_lock_failure {
    enum {
        QCOW2_LOCK_BYTE_TAKEN,   /* "Failed to lock byte N" */
        QCOW2_LOCK_UNSHARED,     /* another opener refuses a permission we need: "Failed to get \"P\" lock" */
        QCOW2_LOCK_HELD,         /* another opener holds one we refuse to share: "Failed to get shared \"P\" lock" */
    } kind;
    int byte;
    const char *permission; /* "consistent read", "write", ... */
};

/*
 * Lock fd's image for reading (consistent read; writers refused) or for
 * writing (consistent read and write; other writers and resizers refused,
 * readers allowed).  0; -EBUSY with *failure filled when another opener
 * conflicts; 0 as well when the file system has no locks (as QEMU, go on
 * without); other -errno from fcntl.
 */
int qcow2_lock(int fd, bool write, struct qcow2_lock_failure *failure);

#endif
