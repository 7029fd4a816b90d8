/*
 * overlay_internal: what overlay.c (attaching clients) shares with
 * overlay_admin.c (listing, resetting and committing overlays for lunad's
 * admin socket).  Not for users of block/.
 */
#ifndef LUNA_BLOCK_OVERLAY_INTERNAL_H
#define LUNA_BLOCK_OVERLAY_INTERNAL_H

#include <stdbool.h>

#include "block/export.h"

/*
 * Ephemeral views are listed in their base's views under a name no client
 * identity can have ('#' is not allowed there): "#N", N counting
 * connections.
 */
#define OVERLAY_EPHEMERAL_PREFIX '#'

/*
 * Write a new, empty qcow2 overlay at path over the export's image (named as
 * its backing file, for QEMU's tools).  A temporary one is never synced.
 * Blocking.  0, or -errno with a malloc'd message.
 */
int overlay_create_file(const struct export *export, const char *path, bool temporary, char **error_message);

#endif
