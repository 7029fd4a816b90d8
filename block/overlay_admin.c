/*
 * Overlay administration for lunad's admin socket: listing an export's
 * overlays, resetting one, and claiming an export for a commit.  Whatever
 * decides whether a client uses an overlay is read under the base's
 * views_lock, the lock export_attach holds while it looks up, creates and
 * opens a view, so a client can never slip in between the check and the
 * change.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/overlay.h"
#include "block/overlay_internal.h"
#include "common/error_message.h"
#include "common/file_util.h"

static const char overlay_suffix[] = ".qcow2";

static bool is_ephemeral_view(const struct export *view)
{
    return view->identity && view->identity[0] == OVERLAY_EPHEMERAL_PREFIX;
}

static unsigned view_clients(const struct export *view)
{
    int refcount = __atomic_load_n(&view->refcount, __ATOMIC_RELAXED);
    return refcount > 0 ? (unsigned)refcount : 0;
}

/* Clients of identity's view (0 when it is not open); views_lock held. */
static unsigned identity_clients(const struct export *export, const char *identity)
{
    for (const struct export *view = export->views; view; view = view->next_view)
        if (strcmp(view->identity, identity) == 0)
            return view_clients(view);
    return 0;
}

/* Clients of every view; views_lock held. */
static unsigned all_clients(const struct export *export)
{
    unsigned clients = 0;
    for (const struct export *view = export->views; view; view = view->next_view)
        clients += view_clients(view);
    return clients;
}

unsigned overlay_clients(struct export *export)
{
    if (export->config.overlay == EXPORT_OVERLAY_NONE)
        return 0;
    pthread_mutex_lock(&export->views_lock);
    unsigned clients = all_clients(export);
    pthread_mutex_unlock(&export->views_lock);
    return clients;
}

void overlay_list_free(struct overlay_entry *entries, size_t count)
{
    for (size_t i = 0; entries && i < count; i++) {
        free(entries[i].identity);
        free(entries[i].path);
    }
    free(entries);
}

static int append_entry(struct overlay_entry **entries, size_t *count, const struct overlay_entry *entry)
{
    struct overlay_entry *grown = realloc(*entries, (*count + 1) * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    *entries = grown;
    grown[(*count)++] = *entry;
    return 0;
}

static int compare_identities(const void *a, const void *b)
{
    const struct overlay_entry *x = a, *y = b;
    return strcmp(x->identity, y->identity);
}

/* The identity a directory entry is the overlay of (malloc'd), or NULL when it is none. */
static char *identity_of(const char *file_name)
{
    size_t length = strlen(file_name), suffix = sizeof(overlay_suffix) - 1;
    if (length <= suffix || strcmp(file_name + length - suffix, overlay_suffix) != 0)
        return NULL;
    char *identity = strndup(file_name, length - suffix);
    if (identity && !overlay_identity_valid(identity)) {
        free(identity);
        return NULL;
    }
    return identity;
}

/* DIR/IDENTITY.qcow2 files, unsorted, without client counts. */
static int scan_directory(struct export *export, struct overlay_entry **entries, size_t *count,
                          char **error_message)
{
    const char *directory = export->config.overlay_dir;
    DIR *dir = opendir(directory);
    if (!dir) {
        if (errno == ENOENT)
            return 0; /* no client has connected yet */
        return error_message_set(error_message, -errno, "%s: cannot read the overlay directory: %s", directory,
                                 strerror(errno));
    }
    int rc = 0;
    struct dirent *dirent;
    while (rc == 0 && (errno = 0, dirent = readdir(dir))) {
        char *identity = identity_of(dirent->d_name);
        if (!identity) {
            if (errno == ENOMEM)
                rc = -ENOMEM;
            continue;
        }
        struct overlay_entry entry = {.identity = identity, .path = overlay_path(export, identity)};
        struct stat st;
        if (!entry.path) {
            rc = -ENOMEM;
        } else if (stat(entry.path, &st) < 0 || !S_ISREG(st.st_mode)) {
            rc = 0; /* gone meanwhile, or not an overlay: not listed */
        } else {
            entry.disk_bytes = (uint64_t)st.st_blocks * 512;
            entry.file_bytes = (uint64_t)st.st_size;
            rc = append_entry(entries, count, &entry);
            if (rc == 0)
                continue;
        }
        free(entry.identity);
        free(entry.path);
    }
    if (rc == 0 && errno != 0)
        rc = error_message_set(error_message, -errno, "%s: cannot read the overlay directory: %s", directory,
                               strerror(errno));
    closedir(dir);
    if (rc == -ENOMEM)
        error_message_set(error_message, rc, "out of memory");
    return rc;
}

/* Client counts for the files found, and the open views whose file is gone. */
static int add_persistent_views(struct export *export, struct overlay_entry **entries, size_t *count)
{
    int rc = 0;
    pthread_mutex_lock(&export->views_lock);
    for (size_t i = 0; i < *count; i++)
        (*entries)[i].clients = identity_clients(export, (*entries)[i].identity);
    for (const struct export *view = export->views; view && rc == 0; view = view->next_view) {
        bool listed = false;
        for (size_t i = 0; i < *count && !listed; i++)
            listed = strcmp((*entries)[i].identity, view->identity) == 0;
        if (listed)
            continue;
        struct overlay_entry entry = {.identity = strdup(view->identity), .path = overlay_path(export, view->identity),
                                      .clients = view_clients(view)};
        if (!entry.identity || !entry.path || append_entry(entries, count, &entry) < 0) {
            free(entry.identity);
            free(entry.path);
            rc = -ENOMEM;
        }
    }
    pthread_mutex_unlock(&export->views_lock);
    return rc;
}

static int list_ephemeral(struct export *export, struct overlay_entry **entries, size_t *count)
{
    int rc = 0;
    pthread_mutex_lock(&export->views_lock);
    for (const struct export *view = export->views; view && rc == 0; view = view->next_view) {
        if (!is_ephemeral_view(view))
            continue;
        struct overlay_entry entry = {.clients = view_clients(view)};
        rc = append_entry(entries, count, &entry);
    }
    pthread_mutex_unlock(&export->views_lock);
    return rc;
}

int overlay_list(struct export *export, struct overlay_entry **entries, size_t *count, char **error_message)
{
    *entries = NULL;
    *count = 0;
    int rc;
    switch (export->config.overlay) {
    case EXPORT_OVERLAY_NONE:
        return error_message_set(error_message, -EINVAL, "export '%s' has no overlays", export->config.name);
    case EXPORT_OVERLAY_EPHEMERAL:
        rc = list_ephemeral(export, entries, count);
        break;
    case EXPORT_OVERLAY_PERSISTENT:
    default:
        rc = scan_directory(export, entries, count, error_message);
        if (rc == 0)
            rc = add_persistent_views(export, entries, count);
        if (rc == 0 && *count > 1)
            qsort(*entries, *count, sizeof(**entries), compare_identities);
        break;
    }
    if (rc < 0) {
        overlay_list_free(*entries, *count);
        *entries = NULL;
        *count = 0;
        if (rc == -ENOMEM && error_message && !*error_message)
            error_message_set(error_message, rc, "out of memory");
    }
    return rc;
}

/* The checks reset and commit share: a persistent export and an identity that has an overlay file. */
static int persistent_overlay(struct export *export, const char *identity, char **path, char **error_message)
{
    const char *name = export->config.name;
    if (export->config.overlay != EXPORT_OVERLAY_PERSISTENT)
        return error_message_set(error_message, -EINVAL, "export '%s' has no persistent overlays", name);
    if (!overlay_identity_valid(identity))
        return error_message_set(error_message, -EINVAL, "'%s' is not a valid identity (letters, digits and . _ : -)",
                                 identity ? identity : "");
    *path = overlay_path(export, identity);
    if (!*path)
        return error_message_set(error_message, -ENOMEM, "out of memory");
    struct stat st;
    if (stat(*path, &st) < 0) {
        int rc = -errno;
        if (rc == -ENOENT)
            error_message_set(error_message, rc, "export '%s' has no overlay for '%s' (%s)", name, identity, *path);
        else
            error_message_set(error_message, rc, "%s: %s", *path, strerror(-rc));
        free(*path);
        *path = NULL;
        return rc;
    }
    return 0;
}

/*
 * Replace path by an empty overlay: written beside it under a name no
 * overlay has (a leading '.'), then renamed over it, so the identity has a
 * whole overlay at every moment, the old one or the new one.
 */
static int recreate_overlay(struct export *export, const char *identity, const char *path, char **error_message)
{
    char *temporary = NULL;
    if (asprintf(&temporary, "%s/.%s.reset-XXXXXX", export->config.overlay_dir, identity) < 0)
        return error_message_set(error_message, -ENOMEM, "out of memory");
    int fd = mkstemp(temporary);
    if (fd < 0) {
        int rc = -errno;
        error_message_set(error_message, rc, "%s: cannot create a new overlay: %s", export->config.overlay_dir,
                          strerror(-rc));
        free(temporary);
        return rc;
    }
    close(fd);
    int rc = overlay_create_file(export, temporary, false, error_message);
    if (rc == 0 && rename(temporary, path) < 0) {
        rc = -errno;
        error_message_set(error_message, rc, "%s: cannot replace the overlay: %s", path, strerror(-rc));
    }
    if (rc < 0) {
        unlink(temporary);
    } else if ((rc = file_sync_directory(export->config.overlay_dir)) < 0) {
        error_message_set(error_message, rc, "%s: cannot sync the overlay directory: %s", export->config.overlay_dir,
                          strerror(-rc));
    }
    free(temporary);
    return rc;
}

int overlay_reset(struct export *export, const char *identity, char **error_message)
{
    char *path = NULL;
    int rc = persistent_overlay(export, identity, &path, error_message);
    if (rc < 0)
        return rc;
    /* Held across the replacement: a client of identity arriving now waits for the new overlay. */
    pthread_mutex_lock(&export->views_lock);
    unsigned clients = identity_clients(export, identity);
    if (export->committing)
        rc = error_message_set(error_message, -EBUSY, "export '%s': an overlay is being committed; try again later",
                               export->config.name);
    else if (clients > 0)
        rc = error_message_set(error_message, -EBUSY, "export '%s': overlay '%s' is in use by %u client(s)",
                               export->config.name, identity, clients);
    else
        rc = recreate_overlay(export, identity, path, error_message);
    pthread_mutex_unlock(&export->views_lock);
    free(path);
    return rc;
}

int overlay_commit_claim(struct export *export, const char *identity, char **error_message)
{
    char *path = NULL;
    int rc = persistent_overlay(export, identity, &path, error_message);
    free(path);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&export->views_lock);
    unsigned clients = all_clients(export);
    if (export->committing)
        rc = error_message_set(error_message, -EBUSY, "export '%s': another overlay is being committed",
                               export->config.name);
    else if (clients > 0)
        rc = error_message_set(error_message, -EBUSY, "export '%s' is in use by %u client(s); a commit changes "
                               "the image under every overlay, so it needs the export to itself",
                               export->config.name, clients);
    else
        export->committing = true;
    pthread_mutex_unlock(&export->views_lock);
    return rc;
}

void overlay_commit_abandon(struct export *export)
{
    pthread_mutex_lock(&export->views_lock);
    export->committing = false;
    pthread_mutex_unlock(&export->views_lock);
}
