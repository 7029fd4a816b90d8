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
#include <stddef.h>
#include <stdint.h>

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

/*
 * ---- Administration (overlay_admin.c), for lunad's admin socket ----
 * Every call here blocks (files, and the views lock an opening overlay
 * holds): pool threads only.  Errors are -errno with a malloc'd message:
 * -EINVAL when the export has no overlays of the kind asked for, -ENOENT
 * for an identity without an overlay file, -EBUSY when clients use what
 * the operation needs to itself.
 */

/* One overlay of an export, as overlay_list reports it. */
struct overlay_entry {
    char *identity;      /* persistent; NULL for an ephemeral overlay */
    char *path;          /* persistent: its file; NULL for ephemeral (unlinked) */
    uint64_t disk_bytes; /* space the file takes on disk */
    uint64_t file_bytes; /* the file's length */
    unsigned clients;    /* connections using it now */
};

/*
 * The persistent overlays of export (every DIR/IDENTITY.qcow2, open or
 * not, by identity) or its live ephemeral ones (one per connection).
 */
int overlay_list(struct export *export, struct overlay_entry **entries, size_t *count, char **error_message);
void overlay_list_free(struct overlay_entry *entries, size_t count);

/* Connections using the export's overlays now (0 for an export without). */
unsigned overlay_clients(struct export *export);

/*
 * Discard identity's changes: its overlay file is replaced by an empty
 * one.  -EBUSY while a client uses it or an overlay is being committed.
 */
int overlay_reset(struct export *export, const char *identity, char **error_message);

/*
 * Take the export for committing identity's overlay into its image:
 * -EBUSY while any client uses the export (or another commit runs),
 * -ENOENT without an overlay file.  From then on no overlay of the export
 * opens: a committed export is meant to be retired (replaced by a fresh
 * export object that sees the new image); overlay_commit_abandon gives it
 * back when the commit does not happen after all.
 */
int overlay_commit_claim(struct export *export, const char *identity, char **error_message);
void overlay_commit_abandon(struct export *export);

typedef void overlay_commit_progress_fn(void *opaque, uint64_t done, uint64_t total);

/*
 * Merge identity's overlay into the image of the export configured as
 * config (overlay_commit.c), then empty the overlay.  For an export taken
 * out of service after overlay_commit_claim: the image is opened
 * read-write for the duration, so the export's read-only open must be let
 * go first (waited for, up to OVERLAY_COMMIT_WAIT_SECONDS, while clients
 * that were negotiating still hold it).  progress may be NULL.
 */
#define OVERLAY_COMMIT_WAIT_SECONDS 15
int overlay_commit_run(const struct export_config *config, const char *identity,
                       overlay_commit_progress_fn *progress, void *opaque, char **error_message);

#endif
