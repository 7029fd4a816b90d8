/*
 * img_compare: `luna-img compare`, as `qemu-img compare` 7.2: whether two
 * images read the same, with its messages and exit codes (0 identical,
 * 1 different, 2 an image could not be opened, 3 block status failed,
 * 4 a read failed).  Ranges both images report as zeroes are skipped
 * without reading, so sparse images of any size compare quickly; the rest
 * is read in chunks of up to 2 MiB.  Without -s the images may differ in
 * size if the larger one's tail reads as zeroes; with -s their sizes and
 * block statuses must match too.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/img/img.h"
#include "block/img/img_status.h"

#define CHUNK_BYTES (2u << 20) /* qemu-img's IO_BUF_SIZE: what is read at a time */
#define SECTOR 512u            /* mismatches are reported at the sector they start in */

enum {
    COMPARE_IDENTICAL = 0,
    COMPARE_DIFFERENT = 1,
    COMPARE_OPEN_ERROR = 2,
    COMPARE_STATUS_ERROR = 3,
    COMPARE_READ_ERROR = 4,
};

/*
 * qemu's progress meter for compare (2% steps), in float as QEMU keeps it,
 * so the same chunks print the same lines.
 */
struct progress {
    bool enabled;
    float current, last_print;
};

static void progress_add(struct progress *p, float delta)
{
    if (!p->enabled)
        return;
    float current = p->current + delta / 100 * 100;
    if (current > 100)
        current = 100;
    p->current = current;
    if (current > p->last_print + 2.0f || current < p->last_print - 2.0f || current == 0 || current == 100) {
        p->last_print = current;
        printf("    (%3.2f/100%%)\r", current);
        fflush(stdout);
    }
}

static void progress_chunk(struct progress *p, uint64_t chunk, uint64_t total)
{
    progress_add(p, ((float)chunk / (float)total) * 100);
}

struct image {
    const char *filename;
    struct img_chain chain;
};

struct compare {
    struct image images[2];
    uint8_t *buffers[2];
    bool quiet, strict;
    struct progress progress;
};

static void compare_usage(void)
{
    printf("usage: luna-img compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q]\n"
           "        [-s] [-U] filename1 filename2\n\n"
           "Compare the contents of two images.  Exit code: 0 identical, 1 different, 2 an image could not be\n"
           "opened, 3 block status failed, 4 a read failed.\n"
           "  -f fmt, -F fmt  the first and second image's formats (raw, qcow2, vmdk, vdi, vpc); probed when omitted\n"
           "  -T src_cache    cache mode for reading (default writeback)\n"
           "  -s              strict: the sizes and block statuses must match too\n"
           "  -p              show progress\n"
           "  -q              quiet\n"
           "  -U              force share: take no image locks\n");
}

static void say(const struct compare *c, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void say(const struct compare *c, const char *format, ...)
{
    if (c->quiet)
        return;
    va_list args;
    va_start(args, format);
    vprintf(format, args);
    va_end(args);
}

static int read_range(struct image *image, uint8_t *buffer, uint64_t offset, uint64_t length)
{
    struct bdev *bdev = img_chain_top(&image->chain);
    uint64_t step = bdev->limits.max_transfer ? bdev->limits.max_transfer : length;
    for (uint64_t done = 0; done < length; done += step) {
        uint64_t piece = length - done < step ? length - done : step;
        int rc = bdev_pread(bdev, buffer + done, piece, offset + done);
        if (rc < 0) {
            img_error("Error while reading offset %" PRIu64 " of %s: %s", offset, image->filename, strerror(-rc));
            return COMPARE_READ_ERROR;
        }
    }
    return 0;
}

static bool all_zero(const uint8_t *buffer, uint64_t length)
{
    return length == 0 || (buffer[0] == 0 && !memcmp(buffer, buffer + 1, length - 1));
}

/* A range only one image has allocated must read as zeroes there. */
static int check_zeroes(struct compare *c, struct image *image, uint64_t offset, uint64_t length)
{
    int rc = read_range(image, c->buffers[0], offset, length);
    if (rc)
        return rc;
    for (uint64_t i = 0; i < length; i += SECTOR) {
        uint64_t piece = length - i < SECTOR ? length - i : SECTOR;
        if (!all_zero(c->buffers[0] + i, piece)) {
            say(c, "Content mismatch at offset %" PRIu64 "!\n", offset + i);
            return COMPARE_DIFFERENT;
        }
    }
    return 0;
}

/* Both images have the range allocated: compare sector by sector. */
static int check_equal(struct compare *c, uint64_t offset, uint64_t length)
{
    int rc;
    for (int i = 0; i < 2; i++)
        if ((rc = read_range(&c->images[i], c->buffers[i], offset, length)))
            return rc;
    for (uint64_t i = 0; i < length; i += SECTOR) {
        uint64_t piece = length - i < SECTOR ? length - i : SECTOR;
        if (memcmp(c->buffers[0] + i, c->buffers[1] + i, piece)) {
            say(c, "Content mismatch at offset %" PRIu64 "!\n", offset + i);
            return COMPARE_DIFFERENT;
        }
    }
    return 0;
}

static int status_of(struct image *image, uint64_t offset, uint64_t bytes, struct img_status *status)
{
    if (img_status_above(&image->chain, offset, bytes, status) < 0 || status->length == 0) {
        img_error("Sector allocation test failed for %s", image->filename);
        return COMPARE_STATUS_ERROR;
    }
    return 0;
}

/* The larger image's tail, past the smaller one's end, must read as zeroes. */
static int check_tail(struct compare *c, uint64_t offset, uint64_t total)
{
    uint64_t size0 = img_chain_top(&c->images[0].chain)->size, size1 = img_chain_top(&c->images[1].chain)->size;
    struct image *over = size0 > size1 ? &c->images[0] : &c->images[1];
    say(c, "Warning: Image size mismatch!\n");
    while (offset < total) {
        struct img_status status;
        int rc = status_of(over, offset, total - offset, &status);
        if (rc)
            return rc;
        uint64_t chunk = status.length;
        if ((status.flags & IMG_STATUS_ALLOCATED) && !(status.flags & IMG_STATUS_ZERO)) {
            if (chunk > CHUNK_BYTES)
                chunk = CHUNK_BYTES;
            if ((rc = check_zeroes(c, over, offset, chunk)))
                return rc;
        }
        offset += chunk;
        progress_chunk(&c->progress, chunk, total);
    }
    return 0;
}

static int compare_images(struct compare *c)
{
    uint64_t size0 = img_chain_top(&c->images[0].chain)->size, size1 = img_chain_top(&c->images[1].chain)->size;
    uint64_t common = size0 < size1 ? size0 : size1, total = size0 > size1 ? size0 : size1;
    progress_add(&c->progress, 0);
    if (c->strict && size0 != size1) {
        say(c, "Strict mode: Image size mismatch!\n");
        return COMPARE_DIFFERENT;
    }
    uint64_t offset = 0;
    while (offset < common) {
        struct img_status status[2];
        int rc;
        for (int i = 0; i < 2; i++)
            if ((rc = status_of(&c->images[i], offset, common - offset, &status[i])))
                return rc;
        bool allocated0 = status[0].flags & IMG_STATUS_ALLOCATED, allocated1 = status[1].flags & IMG_STATUS_ALLOCATED;
        uint64_t chunk = status[0].length < status[1].length ? status[0].length : status[1].length;
        if (c->strict && status[0].flags != status[1].flags) {
            say(c, "Strict mode: Offset %" PRIu64 " block status mismatch!\n", offset);
            return COMPARE_DIFFERENT;
        }
        if ((status[0].flags & IMG_STATUS_ZERO) && (status[1].flags & IMG_STATUS_ZERO)) {
            /* Both read as zeroes: nothing to read. */
        } else if (allocated0 == allocated1) {
            if (allocated0) {
                if (chunk > CHUNK_BYTES)
                    chunk = CHUNK_BYTES;
                if ((rc = check_equal(c, offset, chunk)))
                    return rc;
            }
        } else {
            if (chunk > CHUNK_BYTES)
                chunk = CHUNK_BYTES;
            if ((rc = check_zeroes(c, &c->images[allocated0 ? 0 : 1], offset, chunk)))
                return rc;
        }
        offset += chunk;
        progress_chunk(&c->progress, chunk, total);
    }
    if (size0 != size1) {
        int rc = check_tail(c, offset, total);
        if (rc)
            return rc;
    }
    say(c, "Images are identical.\n");
    return COMPARE_IDENTICAL;
}

int img_compare_main(int argc, char **argv)
{
    enum { OPTION_OBJECT = 256, OPTION_IMAGE_OPTS };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, OPTION_OBJECT},
        {"image-opts", no_argument, NULL, OPTION_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {0},
    };
    const char *formats[2] = {NULL, NULL}, *cache_name = "writeback";
    bool progress = false, force_share = false, image_opts = false;
    struct compare c = {0};
    optind = 1;
    for (int opt; (opt = getopt_long(argc, argv, ":hf:F:T:pqsU", long_options, NULL)) != -1;) {
        switch (opt) {
        case 'h': compare_usage(); return 0;
        case 'f': formats[0] = optarg; break;
        case 'F': formats[1] = optarg; break;
        case 'T': cache_name = optarg; break;
        case 'p': progress = true; break;
        case 'q': c.quiet = true; break;
        case 's': c.strict = true; break;
        case 'U': force_share = true; break;
        case OPTION_OBJECT: break; /* secrets and the like: nothing luna-img reads needs them */
        case OPTION_IMAGE_OPTS: image_opts = true; break;
        default: return img_option_error(opt, argv, optind);
        }
    }
    if (optind != argc - 2) {
        img_error("Expecting two image file names");
        return img_help_hint();
    }
    c.progress.enabled = progress && !c.quiet;
    c.images[0].filename = argv[optind];
    c.images[1].filename = argv[optind + 1];

    int status = COMPARE_OPEN_ERROR;
    enum bdev_cache_mode cache;
    if (bdev_cache_mode_parse(cache_name, &cache) < 0) {
        img_error("Invalid source cache option: %s", cache_name);
    } else if (img_chain_open_spec(c.images[0].filename, image_opts, formats[0], force_share, cache, NULL,
                                   &c.images[0].chain) == 0) {
        if (img_chain_open_spec(c.images[1].filename, image_opts, formats[1], force_share, cache, NULL,
                                &c.images[1].chain) == 0) {
            c.buffers[0] = malloc(CHUNK_BYTES);
            c.buffers[1] = malloc(CHUNK_BYTES);
            if (c.buffers[0] && c.buffers[1]) {
                status = compare_images(&c);
            } else {
                img_error("%s", strerror(ENOMEM));
                status = COMPARE_READ_ERROR;
            }
            free(c.buffers[0]);
            free(c.buffers[1]);
            img_chain_close(&c.images[1].chain);
        }
        img_chain_close(&c.images[0].chain);
    }
    if (c.progress.enabled)
        printf("\n");
    return status;
}
