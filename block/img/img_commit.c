/*
 * img_commit: `luna-img commit`, as `qemu-img commit` 7.2: the same flags,
 * messages and exit codes.  This file finds the base in the image's
 * backing chain and opens the chain with the base writable; the copy is
 * the commit engine's (block/commit.h).
 *
 * As in qemu-img, the image is emptied afterwards unless -d is given, and
 * -b implies -d (the intermediate images and the top stay as they are).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/bdev.h"
#include "block/commit.h"
#include "block/img/img.h"
#include "block/qcow2/qcow2.h"
#include "block/qcow2/qcow2_image.h"

#define MAX_CHAIN 64 /* deeper than the driver opens (it stops loops) */

/* One image of the chain as the probe open found it, top first. */
struct chain_layer {
    char *path;            /* as the driver opened it */
    enum bdev_format format;
    char *backing_name;    /* as stored in its header; NULL when none */
    uint64_t size;
};

struct chain {
    struct chain_layer layers[MAX_CHAIN];
    int count;
};

struct commit_request {
    const char *filename;
    const char *format;  /* -f; NULL: probe */
    const char *base;    /* -b */
    bool drop;           /* -d (and -b) */
    bool progress;       /* -p */
    bool quiet;          /* -q */
    enum bdev_cache_mode cache; /* -t */
};

static void commit_usage(void)
{
    printf("usage: luna-img commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base]\n"
           "        [-r rate_limit] [-d] [-p] filename\n\n"
           "Commit the changes recorded in filename into its backing file (or, with -b, into base, further\n"
           "down the backing chain), then empty filename.\n"
           "  -f fmt         the image format (qcow2); probed when omitted\n"
           "  -b base        the image to commit into: any image of the backing chain (implies -d)\n"
           "  -d             do not empty filename afterwards\n"
           "  -t cache       the cache mode of the images written (default writeback)\n"
           "  -r rate_limit  accepted for compatibility (luna-img does not throttle)\n"
           "  -p             show progress\n"
           "  -q             quiet\n");
}

static void chain_clear(struct chain *chain)
{
    for (int i = 0; i < chain->count; i++) {
        free(chain->layers[i].path);
        free(chain->layers[i].backing_name);
    }
    chain->count = 0;
}

static int resolve_format(const char *path, const char *format, enum bdev_format *out)
{
    if (!format) {
        *out = qcow2_probe(path) ? BDEV_FORMAT_QCOW2 : BDEV_FORMAT_AUTO;
        return 0;
    }
    if (!strcmp(format, "qcow2")) {
        if (!qcow2_probe(path)) {
            img_error("Could not open '%s': Image is not in qcow2 format", path);
            return -EINVAL;
        }
        *out = BDEV_FORMAT_QCOW2;
        return 0;
    }
    if (!strcmp(format, "raw")) {
        *out = BDEV_FORMAT_RAW;
        return 0;
    }
    img_error("Could not open '%s': Unknown driver '%s'", path, format);
    return -EINVAL;
}

static int open_layer(const char *path, enum bdev_format format, bool readonly, bool force_share,
                      enum bdev_cache_mode cache, struct bdev *backing, struct bdev **out)
{
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = path;
    options.format = format;
    options.readonly = readonly;
    options.force_share = force_share;
    options.cache = cache;
    options.backing = backing;
    char *reason = NULL;
    int rc = bdev_open(&options, out, &reason);
    if (rc < 0)
        img_open_error(path, rc, reason);
    free(reason);
    return rc;
}

static enum bdev_format format_of(const struct bdev *bdev)
{
    enum bdev_format format = BDEV_FORMAT_AUTO;
    if (bdev_format_parse(bdev->ops->name, &format) < 0)
        format = BDEV_FORMAT_AUTO;
    return format;
}

/* Open the chain once, read-only and without locks, to learn its files, formats and sizes. */
static int chain_probe(const struct commit_request *r, struct chain *chain)
{
    int fd = open(r->filename, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int error = errno;
        img_error("Could not open '%s': Could not open '%s': %s", r->filename, r->filename, strerror(error));
        return -error;
    }
    close(fd);
    enum bdev_format format;
    int rc = resolve_format(r->filename, r->format, &format);
    struct bdev *top = NULL;
    if (rc == 0)
        rc = open_layer(r->filename, format, true, true, r->cache, NULL, &top);
    if (rc < 0)
        return rc;
    for (struct bdev *layer = top; layer && rc == 0;
         layer = qcow2_image_is(layer) ? qcow2_image_backing(layer) : NULL) {
        if (chain->count == MAX_CHAIN) {
            img_error("Could not open '%s': backing chain too deep", r->filename);
            rc = -ELOOP;
            break;
        }
        struct chain_layer *entry = &chain->layers[chain->count++];
        const char *name = qcow2_image_is(layer) ? qcow2_image_header(layer)->backing_file : NULL;
        entry->path = strdup(layer->filename);
        entry->backing_name = name ? strdup(name) : NULL;
        entry->format = format_of(layer);
        entry->size = layer->size;
        if (!entry->path || (name && !entry->backing_name)) {
            img_error("out of memory");
            rc = -ENOMEM;
        }
    }
    bdev_close(top);
    return rc;
}

/*
 * The layer -b names, as qemu-img finds it: a relative name is taken
 * relative to each image's directory in turn, and the canonical path must
 * equal that of the image's backing file.  An absolute name stored in a
 * header is only compared with an absolute -b.  0 when not found.
 */
static int chain_find(const struct chain *chain, const char *name)
{
    for (int i = 0; i + 1 < chain->count; i++) {
        const struct chain_layer *layer = &chain->layers[i];
        if (!layer->backing_name || (name[0] != '/' && layer->backing_name[0] == '/'))
            continue;
        char *candidate = qcow2_backing_path(layer->path, name);
        char wanted[PATH_MAX], actual[PATH_MAX];
        bool found = candidate && realpath(candidate, wanted) && realpath(chain->layers[i + 1].path, actual) &&
                     !strcmp(wanted, actual);
        free(candidate);
        if (found)
            return i + 1;
    }
    return 0;
}

/* qemu-img grows a shorter base; the engine grows qcow2 bases, a raw file is grown here. */
static int grow_raw_base(const struct chain_layer *base, uint64_t size)
{
    struct stat st;
    if (base->format == BDEV_FORMAT_QCOW2 || stat(base->path, &st) < 0 || !S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size >= size)
        return 0;
    if (truncate(base->path, (off_t)size) < 0) {
        int error = errno;
        img_error("Could not resize '%s': %s", base->path, strerror(error));
        return -error;
    }
    return 0;
}

/* Open base read-write, each layer above it over the one below, top last; run the engine. */
static int commit_chain(const struct commit_request *r, const struct chain *chain, int base_index)
{
    struct bdev *opened[MAX_CHAIN] = {0};
    int rc = grow_raw_base(&chain->layers[base_index], chain->layers[0].size);
    for (int i = base_index; rc == 0 && i >= 0; i--) {
        const struct chain_layer *layer = &chain->layers[i];
        bool writable = i == base_index || (i == 0 && !r->drop);
        rc = open_layer(layer->path, layer->format, !writable, false, r->cache,
                        i == base_index ? NULL : opened[i + 1], &opened[i]);
    }
    struct img_progress progress = {.enabled = r->progress && !r->quiet};
    char *message = NULL;
    if (rc == 0) {
        img_progress_print(&progress, 0);
        rc = block_commit(opened[0], opened[base_index], progress.enabled ? img_progress_fraction : NULL, &progress,
                          &message);
    }
    if (rc == 0 && !r->drop)
        rc = block_commit_empty(opened[0], &message);
    if (progress.enabled && rc == 0) {
        img_progress_print(&progress, 100);
        printf("\n");
    }
    if (rc < 0 && message)
        img_error("%s", message);
    free(message);
    for (int i = 0; i <= base_index; i++)
        if (opened[i])
            bdev_close(opened[i]);
    return rc;
}

static int commit(const struct commit_request *r)
{
    struct chain chain = {0};
    int rc = chain_probe(r, &chain);
    int base_index = 0;
    if (rc == 0 && r->base) {
        if (!(base_index = chain_find(&chain, r->base))) {
            img_error("Did not find '%s' in the backing chain of '%s'", r->base, r->filename);
            rc = -ENOENT;
        }
    } else if (rc == 0) {
        if (chain.count < 2) {
            img_error("Image does not have a backing file");
            rc = -ENOENT;
        }
        base_index = 1;
    }
    if (rc == 0)
        rc = commit_chain(r, &chain, base_index);
    chain_clear(&chain);
    if (rc < 0)
        return 1;
    if (!r->quiet)
        printf("Image committed.\n");
    return 0;
}

int img_commit_main(int argc, char **argv)
{
    enum { OPTION_OBJECT = 256, OPTION_IMAGE_OPTS };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, OPTION_OBJECT},
        {"image-opts", no_argument, NULL, OPTION_IMAGE_OPTS},
        {0},
    };
    struct commit_request r = {.cache = BDEV_CACHE_WRITEBACK};
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":hf:t:b:r:dpq", long_options, NULL)) != -1;) {
        switch (c) {
        case 'h': commit_usage(); return 0;
        case 'f': r.format = optarg; break;
        case 'b':
            r.base = optarg;
            r.drop = true; /* as in qemu-img: committing past the first layer keeps every layer */
            break;
        case 'd': r.drop = true; break;
        case 'p': r.progress = true; break;
        case 'q': r.quiet = true; break;
        case 't':
            if (bdev_cache_mode_parse(optarg, &r.cache) < 0) {
                img_error("Invalid cache option: %s", optarg);
                return 1;
            }
            break;
        case 'r': {
            uint64_t rate;
            if (img_parse_size(optarg, &rate) < 0) {
                img_error("Invalid rate limit specified. You may use k, M, G, T, P or E suffixes for");
                img_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
                return 1;
            }
            break; /* a rate limit only slows the copy: luna-img copies at full speed */
        }
        case OPTION_OBJECT: break; /* secrets and the like: no format luna-img reads needs one */
        case OPTION_IMAGE_OPTS:
            img_error("--image-opts is not supported by luna-img");
            return 1;
        default: /* ':' or '?' */
            return img_option_error(c, argv, optind);
        }
    }
    if (optind != argc - 1) {
        img_error("Expecting one image file name");
        return img_help_hint();
    }
    r.filename = argv[optind];
    return commit(&r);
}
