/*
 * export: a named disk that lunad serves, shared by every protocol.
 *
 * An export pairs a bdev with how it is offered (name, description,
 * read-only).  It is reference-counted across threads: the export table
 * holds one reference, every client that selected it holds one, so a
 * SIGHUP reload can drop an export from the table while its clients keep
 * using it until they disconnect; the bdev closes with the last reference.
 *
 * An export table is an immutable snapshot of the exports, itself
 * reference-counted: a reload builds a new table (reusing the export
 * objects whose configuration did not change, so their open file and cache
 * stay shared) and publishes it; sessions hold the table they started with.
 */
#ifndef LUNA_BLOCK_EXPORT_H
#define LUNA_BLOCK_EXPORT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "bdev.h"
#include "range_lock.h"

/* Copy-on-write layers between clients and the export's image (block/overlay.h). */
enum export_overlay {
    EXPORT_OVERLAY_NONE,       /* clients write the image itself */
    EXPORT_OVERLAY_EPHEMERAL,  /* each client gets a temporary overlay, gone when it leaves */
    EXPORT_OVERLAY_PERSISTENT, /* each client identity keeps DIR/<identity>.qcow2 */
};

struct export_config {
    char *name;
    char *description;   /* may be NULL */
    struct bdev_options bdev; /* bdev.path is owned (malloc'd) */
    enum export_overlay overlay;
    /* persistent: the overlays' directory; ephemeral: where temporary ones go (NULL: $TMPDIR or /var/tmp) */
    char *overlay_dir;
};

struct export {
    struct export_config config; /* owned copy */
    struct bdev *bdev;
    bool readonly;               /* config.bdev.readonly or the bdev is read-only */
    int refcount;                /* atomic; use export_ref / export_unref */

    /*
     * An overlay view (export_attach): the export it lies over (one
     * reference) and, for a persistent overlay, whose it is.  A view of an
     * ephemeral overlay belongs to one client, so writes on another
     * connection do not reach it: private_view says so to the protocols.
     */
    struct export *base;
    char *identity;
    bool private_view;
    /*
     * A base with overlays: the views open now (persistent ones shared by
     * their clients; ephemeral ones, one per connection, listed too so the
     * admin socket can count them).
     */
    pthread_mutex_t views_lock;
    struct export *views;
    struct export *next_view;
    /* Under views_lock: an overlay is being committed into the image, so no view may open. */
    bool committing;
    /*
     * Writes in progress, by byte range (block/write_guard.h): every
     * protocol's writers take their range here, so read-modify-write
     * commands are atomic against all of them.
     */
    struct range_lock writers;
};

/*
 * What a new export object starts with, its bdev aside: one reference,
 * its locks.  For export_open and the overlay views.  0 or -errno.
 */
int export_init_state(struct export *export);

/* Open the bdev of config; on failure -errno and a malloc'd message. */
int export_open(const struct export_config *config, struct export **out, char **error_message);
struct export *export_ref(struct export *export);
void export_unref(struct export *export);

/* True when both configurations describe the same export exactly. */
bool export_config_equal(const struct export_config *a, const struct export_config *b);
int export_config_copy(struct export_config *dst, const struct export_config *src);
void export_config_clear(struct export_config *config);

struct export_table {
    struct export **exports; /* each holds one reference */
    size_t count;
    int refcount;            /* atomic */
};

struct export_table *export_table_new(void);
int export_table_add(struct export_table *table, struct export *export); /* takes the reference */
struct export_table *export_table_ref(struct export_table *table);
void export_table_unref(struct export_table *table);
/* Borrowed pointer (valid while the table is referenced); NULL if absent. */
struct export *export_table_find(const struct export_table *table, const char *name);

#endif
