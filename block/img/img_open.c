/* img_open: how luna-img opens an image it reads, and which formats it knows. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/image_probe.h"
#include "block/img/img.h"
#include "block/iscsi_client.h"
#include "block/nbd_client.h"
#include "block/qcow2/qcow2.h"

bool img_input_format_known(const char *format)
{
    enum bdev_format parsed;
    return bdev_format_parse(format, &parsed) == 0 && parsed != BDEV_FORMAT_AUTO && parsed != BDEV_FORMAT_HOST_DEVICE &&
           parsed != BDEV_FORMAT_LVM && parsed != BDEV_FORMAT_NBD && parsed != BDEV_FORMAT_ISCSI;
}

static bool choice_given(const struct img_snapshot_choice *choice)
{
    return choice && (choice->id || choice->name || choice->any);
}

static int open_image(const char *path, const char *format, bool readonly, bool force_share,
                      enum bdev_cache_mode cache, const struct img_snapshot_choice *choice, struct bdev **out)
{
    /* The file itself first: qemu-img names it twice when it cannot be opened at all. */
    bool remote = nbd_client_is_url(path) || iscsi_client_is_url(path);
    int fd = remote ? -1 : open(path, readonly ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CLOEXEC);
    if (!remote && fd < 0) {
        int error = errno;
        img_error("Could not open '%s': Could not open '%s': %s", path, path, strerror(error));
        return -error;
    }
    if (fd >= 0)
        close(fd);
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = path;
    options.readonly = readonly;
    options.force_share = force_share;
    options.cache = cache;
    if (!format)
        options.format = remote ? BDEV_FORMAT_AUTO : image_probe(path); /* a remote disk is taken as raw */
    else if (bdev_format_parse(format, &options.format) < 0)
        options.format = BDEV_FORMAT_RAW;
    if (options.format == BDEV_FORMAT_QCOW2 && !remote && !qcow2_probe(path)) {
        img_error("Could not open '%s': Image is not in qcow2 format", path);
        return -EINVAL;
    }
    if (options.format == BDEV_FORMAT_AUTO)
        options.format = BDEV_FORMAT_RAW; /* raw on a block device is still the device, on a URL the remote disk */
    if (choice_given(choice)) {
        if (options.format != BDEV_FORMAT_QCOW2) {
            img_error("Failed to load snapshot: Block format '%s' used by device '' does not support temporarily "
                      "loading internal snapshots",
                      bdev_format_name(options.format));
            return -ENOTSUP;
        }
        options.snapshot_id = choice->id;
        options.snapshot_name = choice->name;
        options.snapshot_any = choice->any;
    }
    char *reason = NULL;
    int rc = bdev_open(&options, out, &reason);
    if (rc == -ENOENT && choice_given(choice))
        img_error("Failed to load snapshot: Can't find snapshot");
    else if (rc < 0)
        img_open_error(path, rc, reason);
    free(reason);
    return rc;
}

int img_open_image(const char *path, const char *format, bool readonly, bool force_share, enum bdev_cache_mode cache,
                   struct bdev **out)
{
    return open_image(path, format, readonly, force_share, cache, NULL, out);
}

int img_open_snapshot(const char *path, const char *format, bool force_share, enum bdev_cache_mode cache,
                      const struct img_snapshot_choice *choice, struct bdev **out)
{
    return open_image(path, format, true, force_share, cache, choice, out);
}

int img_snapshot_param_parse(const char *text, struct img_snapshot_choice *choice)
{
    *choice = (struct img_snapshot_choice){0};
    if (strncmp(text, "snapshot.", 9)) {
        choice->any = text;
        return 0;
    }
    char *message = NULL;
    if (img_options_parse(&choice->storage, text, &message) < 0 || choice->storage.help) {
        free(message);
        img_error("Failed in parsing snapshot param '%s'", text);
        return 1;
    }
    choice->id = img_options_take(&choice->storage, "snapshot.id");
    choice->name = img_options_take(&choice->storage, "snapshot.name");
    if (img_options_unused(&choice->storage)) {
        img_error("Invalid parameter '%s'", img_options_unused(&choice->storage));
        img_error("Failed in parsing snapshot param '%s'", text);
        return 1;
    }
    return 0;
}

void img_snapshot_choice_free(struct img_snapshot_choice *choice) { img_options_free(&choice->storage); }

int img_one_image(const char *format, int argc, char **argv, int optind, const char **filename)
{
    if (format && !img_input_format_known(format)) {
        img_error("Unknown file format '%s' (luna-img reads raw, qcow2, vmdk, vdi and vpc)", format);
        return 1;
    }
    if (optind != argc - 1) {
        img_error(optind >= argc ? "Expecting one image file name" : "Unexpected argument: %s", argv[argc - 1]);
        return img_help_hint();
    }
    *filename = argv[optind];
    return 0;
}
