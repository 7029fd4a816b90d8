/* img_open: how luna-img opens an image it reads, and which formats it knows. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/image_probe.h"
#include "block/img/img.h"
#include "block/qcow2/qcow2.h"

bool img_input_format_known(const char *format)
{
    enum bdev_format parsed;
    return bdev_format_parse(format, &parsed) == 0 && parsed != BDEV_FORMAT_AUTO && parsed != BDEV_FORMAT_HOST_DEVICE &&
           parsed != BDEV_FORMAT_LVM;
}

int img_open_image(const char *path, const char *format, bool readonly, bool force_share, enum bdev_cache_mode cache,
                   struct bdev **out)
{
    /* The file itself first: qemu-img names it twice when it cannot be opened at all. */
    int fd = open(path, readonly ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int error = errno;
        img_error("Could not open '%s': Could not open '%s': %s", path, path, strerror(error));
        return -error;
    }
    close(fd);
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = path;
    options.readonly = readonly;
    options.force_share = force_share;
    options.cache = cache;
    if (!format)
        options.format = image_probe(path);
    else if (bdev_format_parse(format, &options.format) < 0)
        options.format = BDEV_FORMAT_RAW;
    if (options.format == BDEV_FORMAT_QCOW2 && !qcow2_probe(path)) {
        img_error("Could not open '%s': Image is not in qcow2 format", path);
        return -EINVAL;
    }
    if (options.format == BDEV_FORMAT_AUTO)
        options.format = BDEV_FORMAT_RAW; /* raw on a block device is still the device */
    char *reason = NULL;
    int rc = bdev_open(&options, out, &reason);
    if (rc < 0)
        img_open_error(path, rc, reason);
    free(reason);
    return rc;
}

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
