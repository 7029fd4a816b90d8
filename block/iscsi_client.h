/*
 * iscsi_client: a LUN on an iSCSI target as a bdev
 * (iscsi://[user[%password]@]host[:port]/IQN/LUN), through libiscsi's
 * asynchronous API on a remote_worker thread (one per LUN).
 *
 * SCSI commands: READ/WRITE(16) (FUA), SYNCHRONIZE CACHE(16), UNMAP (when
 * READ CAPACITY(16) says the LUN is thin, LBPME), WRITE SAME(16) of zeroes
 * (with UNMAP for BDEV_MAY_UNMAP), GET LBA STATUS for block status.
 * libiscsi reconnects by itself when the session drops and sends the
 * commands again; a request not done after reconnect_timeout seconds is
 * cancelled and fails with -EIO.  Drops are told through
 * bdev_options.event.
 */
#ifndef LUNA_BLOCK_ISCSI_CLIENT_H
#define LUNA_BLOCK_ISCSI_CLIENT_H

#include <stdbool.h>

#include "block/bdev.h"

/* Whether path is an iscsi:// URL (what bdev_open hands to this driver). */
bool iscsi_client_is_url(const char *path);

/* bdev_open's entry for BDEV_FORMAT_ISCSI: logs in (blocking) and starts the thread.  0 or -errno and a message. */
int iscsi_client_open(struct bdev *bdev, const struct bdev_options *options, char **error_message);

#endif
