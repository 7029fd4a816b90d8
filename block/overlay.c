#include "block/overlay.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/aio_internal.h"
#include "block/align.h"
#include "block/overlay_internal.h"
#include "block/qcow2/qcow2_create.h"
#include "common/error_message.h"
#include "common/file_util.h"

bool overlay_identity_valid(const char *identity)
{
    size_t length = identity ? strlen(identity) : 0;
    if (length == 0 || length > OVERLAY_IDENTITY_MAX || identity[0] == '.')
        return false;
    for (size_t i = 0; i < length; i++) {
        char c = identity[i];
        bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                       c == '_' || c == ':' || c == '-';
        if (!allowed)
            return false;
    }
    return true;
}

char *overlay_path(const struct export *export, const char *identity)
{
    char *path = NULL;
    if (!export->config.overlay_dir || asprintf(&path, "%s/%s.qcow2", export->config.overlay_dir, identity) < 0)
        return NULL;
    return path;
}

/* A temporary overlay is never synced: nothing of it outlives lunad. */
int overlay_create_file(const struct export *export, const char *path, bool temporary, char **error_message)
{
    struct qcow2_create_options options;
    qcow2_create_options_init(&options);
    options.no_sync = temporary;
    options.size = export->bdev->size;
    char *backing = realpath(export->config.bdev.path, NULL);
    options.backing_file = backing ? backing : export->config.bdev.path;
    /* Remote disks and LVs are raw data to QEMU, which reads the overlay's header too. */
    const char *driver = export->bdev->ops->name;
    bool raw = !strcmp(driver, "nbd") || !strcmp(driver, "iscsi") || !strcmp(driver, "lvm");
    options.backing_format = raw ? "raw" : driver;
    int rc = qcow2_create(path, &options, error_message);
    free(backing);
    return rc;
}

static int open_overlay(struct export *export, const char *path, struct export **view, char **error_message)
{
    struct export *overlay = calloc(1, sizeof(*overlay));
    if (!overlay || export_config_copy(&overlay->config, &export->config) < 0) {
        free(overlay);
        error_message_set(error_message, 0, "out of memory");
        return -ENOMEM;
    }
    struct bdev_options options = export->config.bdev;
    options.path = path;
    options.format = BDEV_FORMAT_QCOW2;
    options.readonly = false;
    options.create_size_set = false;
    options.backing = export->bdev;
    int rc = bdev_open(&options, &overlay->bdev, error_message);
    if (rc < 0) {
        export_config_clear(&overlay->config);
        free(overlay);
        return rc;
    }
    overlay->config.overlay = EXPORT_OVERLAY_NONE; /* the view itself is written directly */
    overlay->readonly = bdev_is_read_only(overlay->bdev);
    if ((rc = export_init_state(overlay)) < 0) {
        bdev_close(overlay->bdev);
        export_config_clear(&overlay->config);
        free(overlay);
        error_message_set(error_message, 0, "out of memory");
        return rc;
    }
    overlay->base = export_ref(export);
    *view = overlay;
    return 0;
}

static int attach_ephemeral(struct export *export, struct export **view, char **error_message)
{
    const char *dir = export->config.overlay_dir;
    if (!dir)
        dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
    char *path = NULL;
    if (asprintf(&path, "%s/luna-overlay-%s-XXXXXX", dir, export->config.name) < 0) {
        error_message_set(error_message, 0, "out of memory");
        return -ENOMEM;
    }
    /* Export names may hold '/': keep the temporary file in dir itself. */
    for (char *p = path + strlen(dir) + 1; *p; p++)
        if (*p == '/')
            *p = '_';
    int fd = mkstemp(path);
    if (fd < 0) {
        int rc = -errno;
        error_message_set(error_message, rc, "%s: cannot create a temporary overlay", dir);
        free(path);
        return rc;
    }
    close(fd);
    int rc = overlay_create_file(export, path, true, error_message);
    if (rc == 0)
        rc = open_overlay(export, path, view, error_message);
    if (rc == 0) {
        (*view)->private_view = true;
        /* Listed among the base's views (for the admin socket), under a name no identity has. */
        static unsigned long connections;
        unsigned long number = __atomic_add_fetch(&connections, 1, __ATOMIC_RELAXED);
        if (asprintf(&(*view)->identity, "%c%lu", OVERLAY_EPHEMERAL_PREFIX, number) < 0) {
            (*view)->identity = NULL;
        } else {
            pthread_mutex_lock(&export->views_lock);
            (*view)->next_view = export->views;
            export->views = *view;
            pthread_mutex_unlock(&export->views_lock);
        }
    }
    /* Open or not, the name goes now: the open file is all the overlay needs. */
    unlink(path);
    free(path);
    return rc;
}

static int attach_persistent(struct export *export, const char *identity, struct export **view,
                             char **error_message)
{
    if (!overlay_identity_valid(identity)) {
        error_message_set(error_message, 0, "export '%s': a client identity is needed (NAME/IDENTITY, "
                          "IDENTITY of letters, digits and . _ : -)", export->config.name);
        return -EINVAL;
    }
    char *path = overlay_path(export, identity);
    char *name = strdup(identity);
    if (!path || !name) {
        free(path);
        free(name);
        error_message_set(error_message, 0, "out of memory");
        return -ENOMEM;
    }
    /* One lock for lookup, creation and opening: two first connections must not both create. */
    pthread_mutex_lock(&export->views_lock);
    int rc = 0;
    struct export *found = NULL;
    for (struct export *v = export->views; v; v = v->next_view)
        if (strcmp(v->identity, identity) == 0)
            found = v;
    if (export->committing) {
        rc = error_message_set(error_message, -EBUSY, "export '%s': an overlay is being committed into "
                               "its image; try again later", export->config.name);
    } else if (found) {
        *view = export_ref(found);
    } else {
        struct stat st;
        if (stat(path, &st) < 0) {
            rc = file_make_directories(export->config.overlay_dir);
            if (rc < 0)
                error_message_set(error_message, rc, "%s: cannot create the overlay directory",
                                  export->config.overlay_dir);
            else
                rc = overlay_create_file(export, path, false, error_message);
        }
        /* A previous view of this identity may still be closing: the driver waits for it. */
        if (rc == 0)
            rc = open_overlay(export, path, view, error_message);
        if (rc == 0) {
            (*view)->identity = name;
            name = NULL;
            (*view)->next_view = export->views;
            export->views = *view;
        }
    }
    pthread_mutex_unlock(&export->views_lock);
    free(name);
    free(path);
    return rc;
}

int export_attach(struct export *export, const char *identity, struct export **view, char **error_message)
{
    if (error_message)
        *error_message = NULL;
    switch (export->config.overlay) {
    case EXPORT_OVERLAY_NONE:
        *view = export_ref(export);
        return 0;
    case EXPORT_OVERLAY_EPHEMERAL:
        return attach_ephemeral(export, view, error_message);
    case EXPORT_OVERLAY_PERSISTENT:
        return attach_persistent(export, identity, view, error_message);
    }
    return -EINVAL;
}

/* ---- asynchronous attach ---- */

struct export_attach_request {
    struct aio_work work;
    struct bdev_io accounting; /* keeps ctx pending (and its loop alive) until done */
    struct export *export;
    char *identity;
    export_attached_fn done;
    void *opaque;
    bool cancelled;
    int result;
    struct export *view;
    char *message;
};

static void attach_run(struct aio_work *work)
{
    struct export_attach_request *request = (struct export_attach_request *)work;
    request->result = export_attach(request->export, request->identity, &request->view, &request->message);
}

static void attach_finished(struct bdev_io *io)
{
    struct export_attach_request *request = container_of(io, struct export_attach_request, accounting);
    if (request->cancelled) {
        if (request->result == 0)
            export_unref(request->view);
        free(request->message);
    } else {
        request->done(request->opaque, request->result, request->result == 0 ? request->view : NULL,
                      request->message);
    }
    export_unref(request->export);
    free(request->identity);
    free(request);
}

static void attach_done(struct aio_work *work)
{
    struct export_attach_request *request = (struct export_attach_request *)work;
    aio_request_finish(&request->accounting, request->result);
}

struct export_attach_request *export_attach_async(struct export *export, const char *identity,
                                                  struct aio_context *ctx, export_attached_fn done,
                                                  void *opaque)
{
    struct export_attach_request *request = calloc(1, sizeof(*request));
    if (!request)
        return NULL;
    if (identity && !(request->identity = strdup(identity))) {
        free(request);
        return NULL;
    }
    request->export = export_ref(export);
    request->done = done;
    request->opaque = opaque;
    request->accounting.ctx = ctx;
    request->accounting.complete = attach_finished;
    request->work.run = attach_run;
    request->work.done = attach_done;
    aio_request_started(&request->accounting);
    if (aio_context_run_in_pool(ctx, &request->work) < 0) {
        /* Undo the accounting without running done: the caller learns of it from NULL. */
        request->cancelled = true;
        request->result = -EAGAIN;
        aio_request_finish(&request->accounting, -EAGAIN);
        return NULL;
    }
    return request;
}

void export_attach_cancel(struct export_attach_request *request)
{
    request->cancelled = true;
}
