/*
 * overlay: each client's copy-on-write layer over an export's image.
 *
 * An export with overlay=ephemeral or overlay=persistent:DIR opens its
 * image once, read-only, and shares it (one bdev, one page cache) as the
 * backing file of a qcow2 overlay per client: the golden image of a
 * diskless-boot farm, each machine writing only its own layer.  A client's
 * view of the export is itself an export (struct export with base set), so
 * protocols serve it like any other.
 */
#ifndef LUNA_BLOCK_OVERLAY_H
#define LUNA_BLOCK_OVERLAY_H

#include <stdbool.h>

#include "block/export.h"

/* Longest identity (a machine name, an iSCSI initiator IQN), bytes. */
#define OVERLAY_IDENTITY_MAX 223

/*
 * True when identity can name a persistent overlay file: 1 to
 * OVERLAY_IDENTITY_MAX characters from [A-Za-z0-9._:-], not starting
 * with '.' (IQNs such as iqn.1993-08.org.debian:01:abc fit).
 */
bool overlay_identity_valid(const char *identity);

/*
 * The export a client uses.  overlay=none: export itself (a new reference).
 * ephemeral: a new overlay in the overlay directory, unlinked at once so it
 * vanishes with its last reference (identity is ignored).  persistent: the
 * overlay DIR/<identity>.qcow2, created on first use, opened once and
 * shared by every client that names the same identity.  The view holds a
 * reference to export.  Blocking (creates and opens files): call it on a
 * pool thread or from a tool, never on an event-loop thread.  0, or -errno
 * with a malloc'd message: -EINVAL for a missing or invalid identity.
 */
int export_attach(struct export *export, const char *identity, struct export **view, char **error_message);

struct aio_context;
struct export_attach_request;

/*
 * Called on ctx's thread with export_attach's result: on success view (a
 * reference the callee owns), on failure -errno and a malloc'd message the
 * callee owns (may be NULL).
 */
typedef void (*export_attached_fn)(void *opaque, int result, struct export *view, char *error_message);

/*
 * export_attach on the thread pool, for event loops; done(opaque, ...) runs
 * later on ctx's thread (never inside this call), and the request counts as
 * pending on ctx until then.  Returns NULL when the request could not be
 * started (out of memory, no pool thread): then done never runs.
 */
struct export_attach_request *export_attach_async(struct export *export, const char *identity,
                                                  struct aio_context *ctx, export_attached_fn done,
                                                  void *opaque);

/* On ctx's thread, before done ran: done will not run, and a view made meanwhile is released. */
void export_attach_cancel(struct export_attach_request *request);

/* The file a persistent overlay of identity lives in (malloc'd), or NULL. */
char *overlay_path(const struct export *export, const char *identity);

#endif
