/*
 * luna-img resize: grow or shrink a raw or qcow2 image with qemu-img 7.2's
 * syntax, messages and exit codes.  qcow2 resizing is the driver's
 * (qcow2_image.h); a raw file is ftruncate()d, its new range fallocate()d
 * or written with zeroes for --preallocation.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/file_io.h"
#include "block/img/img.h"
#include "block/qcow2/qcow2_image.h"

#define ZERO_CHUNK (1u << 20)

struct resize_request {
    const char *filename, *format, *size_text;
    enum qcow2_preallocation preallocation;
    bool shrink, quiet;
};

static void resize_usage(void)
{
    printf("usage: luna-img resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] "
           "[--shrink] filename [+ | -]size\n\n"
           "Change the virtual size of a raw or qcow2 image.\n"
           "  [+ | -]size                 the new size, or how much to add or take away (k, M, G, T, P, E)\n"
           "  --shrink                    allow making the image smaller (what lies past the new end is lost)\n"
           "  --preallocation=prealloc    off, metadata (qcow2), falloc or full: how the grown range is allocated\n"
           "  -f fmt                      the image format (raw or qcow2); probed when omitted\n"
           "  -q                          quiet\n");
}

/* qemu's size parameter: a number with an optional suffix, below 2^64. */
static int parse_size(const char *text, uint64_t *out)
{
    if (img_parse_size(text, out) == 0)
        return 0;
    /* qemu tells a number too large apart from one it cannot read. */
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (end != text && errno == 0 && value >= 0 && strchr("kKmMgGtTpPeEbB", *end) && end[*end ? 1 : 0] == '\0') {
        img_error("Value '%s' is out of range for parameter 'size'", text);
        return -ERANGE;
    }
    img_error("Parameter 'size' expects a non-negative number below 2^64");
    fprintf(stderr, "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                    "and exabytes, respectively.\n");
    return -EINVAL;
}

static int raw_fill(int fd, uint64_t from, uint64_t to, enum qcow2_preallocation mode)
{
    if (mode == QCOW2_PREALLOC_FALLOC)
        return posix_fallocate(fd, (off_t)from, (off_t)(to - from)) == 0 ? 0 : -EIO;
    if (mode != QCOW2_PREALLOC_FULL)
        return 0;
    uint8_t *zeroes = calloc(1, ZERO_CHUNK);
    if (!zeroes)
        return -ENOMEM;
    int rc = 0;
    for (uint64_t at = from; rc == 0 && at < to;) {
        size_t chunk = to - at < ZERO_CHUNK ? (size_t)(to - at) : ZERO_CHUNK;
        ssize_t n = pwrite(fd, zeroes, chunk, (off_t)at);
        if (n <= 0)
            rc = n < 0 ? -errno : -EIO;
        else
            at += (uint64_t)n;
    }
    free(zeroes);
    return rc;
}

static int resize_raw(struct bdev *bdev, uint64_t current, uint64_t size, enum qcow2_preallocation mode)
{
    if (mode == QCOW2_PREALLOC_METADATA) {
        img_error("Unsupported preallocation mode: metadata");
        return -ENOTSUP;
    }
    struct file_bdev *file = file_bdev_get(bdev);
    struct stat st;
    if (!file || fstat(file->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        img_error("Cannot grow device files");
        return -ENOTSUP;
    }
    int rc = 0;
    if (ftruncate(file->fd, (off_t)size) < 0)
        rc = -errno;
    if (rc == 0 && size > current)
        rc = raw_fill(file->fd, current, size, mode);
    if (rc == 0 && fdatasync(file->fd) < 0)
        rc = -errno;
    if (rc < 0)
        img_error("Could not resize file: %s", strerror(-rc));
    return rc;
}

static int resize_qcow2(struct bdev *bdev, uint64_t current, uint64_t size, enum qcow2_preallocation mode)
{
    const struct qcow2_header *h = &qcow2_image_header(bdev)->header;
    if (h->nb_snapshots && h->version < 3) {
        img_error("Can't resize a v2 image which has snapshots");
        return -ENOTSUP;
    }
    if (size % 512) {
        img_error("The new size must be a multiple of 512");
        return -EINVAL;
    }
    int rc;
    if (size < current) {
        rc = qcow2_image_shrink(bdev, size);
    } else {
        rc = qcow2_image_grow(bdev, size);
        if (rc == 0)
            rc = qcow2_image_data_file_resize(bdev, size);
        if (rc == 0)
            rc = qcow2_image_preallocate(bdev, current, size, mode);
    }
    if (rc == -EFBIG)
        img_error("The new size is too large for this image (its L1 table would exceed QEMU's limit)");
    else if (rc < 0)
        img_error("Could not resize image: %s", strerror(-rc));
    return rc;
}

static int resize(const struct resize_request *r)
{
    char sign = r->size_text[0];
    uint64_t amount;
    if (parse_size(sign == '+' || sign == '-' ? r->size_text + 1 : r->size_text, &amount) < 0)
        return 1;
    struct bdev *bdev;
    if (img_open_image(r->filename, r->format, false, false, BDEV_CACHE_WRITEBACK, &bdev) < 0)
        return 1;
    int status = 1;
    uint64_t current = bdev->size;
    __int128 total = sign == '+' ? (__int128)current + amount : sign == '-' ? (__int128)current - amount : amount;
    bool qcow2 = qcow2_image_is(bdev), raw = file_bdev_get(bdev) != NULL;
    if (total <= 0) {
        img_error("New image size must be positive");
    } else if (total > INT64_MAX) {
        img_error("Value '%s' is out of range for parameter 'size'", r->size_text);
    } else if ((uint64_t)total <= current && r->preallocation != QCOW2_PREALLOC_OFF) {
        img_error("Preallocation can only be used for growing images");
    } else if ((uint64_t)total < current && !r->shrink) {
        img_error("Use the --shrink option to perform a shrink operation.");
        img_error("warning: Shrinking an image will delete all data beyond the shrunken image's end. Before "
                  "performing such an operation, make sure there is no important data there.");
    } else if (!qcow2 && !raw) {
        img_error("Image format driver does not support resize");
    } else if ((qcow2 ? resize_qcow2 : resize_raw)(bdev, current, (uint64_t)total, r->preallocation) == 0) {
        if (!r->quiet)
            printf("Image resized.\n");
        status = 0;
    }
    bdev_close(bdev);
    return status;
}

int img_resize_main(int argc, char **argv)
{
    enum { OPTION_OBJECT = 256, OPTION_IMAGE_OPTS, OPTION_PREALLOCATION, OPTION_SHRINK };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, OPTION_OBJECT},
        {"image-opts", no_argument, NULL, OPTION_IMAGE_OPTS},
        {"preallocation", required_argument, NULL, OPTION_PREALLOCATION},
        {"shrink", no_argument, NULL, OPTION_SHRINK},
        {0},
    };
    /* The size is the last argument, taken out first: "-5M" is a size, not an option (as qemu-img does). */
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        resize_usage();
        return 0;
    }
    if (argc < 3) {
        img_error("Not enough arguments");
        return img_help_hint();
    }
    struct resize_request r = {.size_text = argv[--argc]};
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":f:hq", long_options, NULL)) != -1;) {
        switch (c) {
        case 'h': resize_usage(); return 0;
        case 'f': r.format = optarg; break;
        case 'q': r.quiet = true; break;
        case OPTION_SHRINK: r.shrink = true; break;
        case OPTION_PREALLOCATION:
            if (qcow2_preallocation_parse(optarg, &r.preallocation) < 0) {
                img_error("Invalid preallocation mode '%s'", optarg);
                return 1;
            }
            break;
        case OPTION_OBJECT: break; /* secrets and the like: no format luna-img writes needs one */
        case OPTION_IMAGE_OPTS:
            img_error("--image-opts is not supported by luna-img");
            return 1;
        default: /* ':' or '?' */
            return img_option_error(c, argv, optind);
        }
    }
    if (optind != argc - 1) {
        img_error("Expecting image file name");
        return img_help_hint();
    }
    r.filename = argv[optind];
    if (r.format && strcmp(r.format, "raw") && strcmp(r.format, "qcow2")) {
        img_error("Could not open '%s': Unknown driver '%s'", r.filename, r.format);
        return 1;
    }
    return resize(&r);
}
