/*
 * Committing a persistent overlay into its export's image, for lunad's
 * admin socket: the commit engine (block/commit.h) run over the overlay
 * and the image opened read-write, then the overlay emptied.  Blocking:
 * a pool thread's work.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/overlay.h"
#include "block/commit.h"
#include "common/error_message.h"

static double monotonic_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/*
 * The image, read-write.  The export's own read-only open of a qcow2 image
 * locks out writers, and it lasts until the last client that was still
 * negotiating when the export went out of service lets its table go
 * (bounded by NBD's handshake limit): retry until then.
 */
static int open_image(const struct export_config *config, struct bdev **image, char **error_message)
{
    struct bdev_options options = config->bdev;
    options.readonly = false;
    options.create_size_set = false;
    options.backing = NULL;
    options.force_share = false;
    double deadline = monotonic_seconds() + OVERLAY_COMMIT_WAIT_SECONDS;
    for (;;) {
        int rc = bdev_open(&options, image, error_message);
        if (rc != -EBUSY || monotonic_seconds() >= deadline)
            return rc;
        free(*error_message);
        *error_message = NULL;
        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
    }
}

int overlay_commit_run(const struct export_config *config, const char *identity,
                       overlay_commit_progress_fn *progress, void *opaque, char **error_message)
{
    char *scratch = NULL;
    char **message = error_message ? error_message : &scratch;
    *message = NULL;
    char *overlay_file = NULL;
    if (!config->overlay_dir || asprintf(&overlay_file, "%s/%s.qcow2", config->overlay_dir, identity) < 0)
        return error_message_set(message, -ENOMEM, "out of memory");

    struct bdev *image = NULL, *overlay = NULL;
    int rc = open_image(config, &image, message);
    if (rc == 0) {
        struct bdev_options options = config->bdev;
        options.path = overlay_file;
        options.format = BDEV_FORMAT_QCOW2;
        options.readonly = false;
        options.create_size_set = false;
        options.force_share = false;
        options.backing = image; /* the chain must end in the image we write, not a second open of it */
        rc = bdev_open(&options, &overlay, message);
    }
    if (rc == 0)
        rc = block_commit(overlay, image, progress, opaque, message);
    if (rc == 0)
        rc = block_commit_empty(overlay, message);
    if (overlay)
        bdev_close(overlay);
    if (image)
        bdev_close(image);
    free(overlay_file);
    free(scratch);
    return rc;
}
