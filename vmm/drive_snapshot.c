#include "vmm/drive_snapshot.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/qcow2/qcow2_create.h"
#include "common/error_message.h"

/* QEMU's choice: /var/tmp survives a tmpfs-full /tmp better and is where big scratch files go. */
static const char *temporary_directory(void)
{
    const char *dir = getenv("TMPDIR");
    return dir && *dir ? dir : "/var/tmp";
}

static int create_overlay(const struct bdev *base, char *path, size_t size, char **error_message)
{
    int length = snprintf(path, size, "%s/lunavm-snapshot-XXXXXX", temporary_directory());
    if (length < 0 || (size_t)length >= size)
        return error_message_set(error_message, -ENAMETOOLONG, "snapshot=on: TMPDIR '%s' is too long",
                                 temporary_directory());
    int fd = mkstemp(path);
    if (fd < 0)
        return error_message_set(error_message, -errno, "snapshot=on: cannot create a file in %s: %s",
                                 temporary_directory(), strerror(errno));
    close(fd); /* qcow2_create rewrites it by name */
    struct qcow2_create_options options;
    qcow2_create_options_init(&options);
    options.size = base->size;
    /* The name is informational: the overlay is opened with the open disk as its backing bdev. */
    options.backing_file = base->filename;
    options.no_sync = true; /* a scratch image no crash must keep */
    int ret = qcow2_create(path, &options, error_message);
    if (ret < 0)
        unlink(path);
    return ret;
}

int drive_snapshot_open(const struct bdev_options *base_options, struct bdev **base, struct bdev **overlay,
                        char **error_message)
{
    struct bdev_options read_only = *base_options;
    read_only.readonly = true;
    int ret = bdev_open(&read_only, base, error_message);
    if (ret < 0)
        return ret;
    char path[PATH_MAX];
    ret = create_overlay(*base, path, sizeof(path), error_message);
    if (ret < 0) {
        bdev_close(*base);
        return ret;
    }
    struct bdev_options overlay_options;
    bdev_options_init(&overlay_options);
    overlay_options.path = path;
    overlay_options.format = BDEV_FORMAT_QCOW2;
    /* A file thrown away at exit needs no durability, and O_DIRECT (cache=none) fails on tmpfs. */
    overlay_options.cache = BDEV_CACHE_UNSAFE;
    overlay_options.aio = base_options->aio;
    overlay_options.discard = base_options->discard;
    overlay_options.backing = *base;
    ret = bdev_open(&overlay_options, overlay, error_message);
    /* Open or not, the file has no further use by name: the open descriptor keeps it. */
    if (unlink(path) < 0 && ret == 0) {
        ret = error_message_set(error_message, -errno, "snapshot=on: cannot remove %s: %s", path, strerror(errno));
        bdev_close(*overlay);
    }
    if (ret < 0)
        bdev_close(*base);
    return ret;
}
