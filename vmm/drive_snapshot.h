/*
 * drive_snapshot: -drive ...,snapshot=on, as QEMU's: the disk is opened
 * read-only and the guest writes to a temporary qcow2 overlay above it,
 * thrown away when the VM ends.
 *
 * The overlay is created in $TMPDIR (default /var/tmp, as QEMU) and
 * unlinked as soon as it is open, so nothing is left behind even when
 * lunavm is killed.  It borrows the open disk as its backing file
 * (bdev_options.backing) whatever the disk is: a file, an nbd:// or
 * iscsi:// URL, an LV.
 */
#ifndef LUNA_VMM_DRIVE_SNAPSHOT_H
#define LUNA_VMM_DRIVE_SNAPSHOT_H

#include "block/bdev.h"

/*
 * Open the disk base_options describes read-only into *base and the
 * overlay over it into *overlay (base_options' aio and discard; cache
 * "unsafe": flushes of a scratch file are no-ops).  0, or
 * -errno with a malloc'd message; nothing stays open on failure.  Close
 * *overlay before *base.
 */
int drive_snapshot_open(const struct bdev_options *base_options, struct bdev **base, struct bdev **overlay,
                        char **error_message);

#endif
