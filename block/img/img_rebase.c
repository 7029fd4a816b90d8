/*
 * img_rebase: `luna-img rebase`, as `qemu-img rebase` 7.2: the same flags,
 * messages and exit codes.  Safe mode copies into the image what its old
 * backing chain and the new backing file read differently (block/rebase.h)
 * before the header names the new one; -u only rewrites the header.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/bdev.h"
#include "block/img/img.h"
#include "block/qcow2/qcow2.h"
#include "block/qcow2/qcow2_format.h"
#include "block/qcow2/qcow2_image.h"
#include "block/qcow2/qcow2_lock.h"
#include "block/qcow2/qcow2_snapshots.h"
#include "block/rebase.h"

struct rebase_request {
    const char *filename;
    const char *format;         /* -f; NULL: probe */
    const char *backing_file;   /* -b; "": none */
    const char *backing_format; /* -F */
    bool unsafe;                /* -u */
    bool progress;              /* -p */
    bool quiet;                 /* -q */
    bool force_share;           /* -U */
    enum bdev_cache_mode cache;        /* -t: the image */
    enum bdev_cache_mode source_cache; /* -T: the backing files read */
};

static void rebase_usage(void)
{
    printf("usage: luna-img rebase [--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-t cache]\n"
           "        [-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] filename\n\n"
           "Point filename at another backing file.  Without -u, whatever the old and the new backing\n"
           "file read differently is first copied into filename, so its content does not change.\n"
           "  -b backing_file  the new backing file, stored as given (relative: to filename's directory);\n"
           "                   \"\" removes the backing file (without -u: its content is copied in)\n"
           "  -F backing_fmt   the new backing file's format (raw or qcow2); required with -b\n"
           "  -u               unsafe: rewrite the header only, reading no data\n"
           "  -f fmt           the image format (qcow2); probed when omitted\n"
           "  -t cache         the image's cache mode (default writeback)\n"
           "  -T src_cache     the backing files' cache mode (default writeback)\n"
           "  -U               force share: open the backing files without locks\n"
           "  -p               show progress\n"
           "  -q               quiet\n");
}

/* format: "raw", "qcow2" or NULL (probe).  prefix: what qemu-img says before the reason. */
static int open_image(const char *prefix, const char *path, const char *format, bool readonly, bool force_share,
                      enum bdev_cache_mode cache, struct bdev **out)
{
    int fd = open(path, readonly ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int error = errno;
        img_error("%s: Could not open '%s': %s", prefix, path, strerror(error));
        return -error;
    }
    close(fd);
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = path;
    options.readonly = readonly;
    options.force_share = force_share && readonly;
    options.cache = cache;
    if (!format) {
        options.format = qcow2_probe(path) ? BDEV_FORMAT_QCOW2 : BDEV_FORMAT_AUTO;
    } else if (!strcmp(format, "qcow2")) {
        if (!qcow2_probe(path)) {
            img_error("%s: Image is not in qcow2 format", prefix);
            return -EINVAL;
        }
        options.format = BDEV_FORMAT_QCOW2;
    } else {
        options.format = BDEV_FORMAT_RAW;
    }
    char *reason = NULL;
    int rc = bdev_open(&options, out, &reason);
    if (rc < 0)
        img_error("%s: %s", prefix, img_open_reason(path, rc, reason));
    free(reason);
    return rc;
}

/* The new backing file, opened as the image will open it: relative to the image's directory. */
static int open_new_backing(const struct rebase_request *r, struct bdev **out)
{
    char *path = qcow2_backing_path(r->filename, r->backing_file);
    char *prefix = NULL;
    if (!path || asprintf(&prefix, "Could not open new backing file '%s'", path) < 0) {
        free(path);
        img_error("out of memory");
        return -ENOMEM;
    }
    int rc = open_image(prefix, path, r->backing_format, true, r->force_share, r->source_cache, out);
    free(prefix);
    free(path);
    return rc;
}

static int change_backing(const struct rebase_request *r, struct bdev *image, const char *backing_file)
{
    int rc = qcow2_image_is(image) ? qcow2_image_set_backing(image, backing_file, r->backing_format) : -ENOTSUP;
    if (rc == -ENOSPC)
        img_error("Could not change the backing file to '%s': No space left in the file header", r->backing_file);
    else if (rc < 0)
        img_error("Could not change the backing file to '%s': %s", r->backing_file, strerror(-rc));
    return rc;
}

/* Safe mode: open the image over its old chain, copy what differs, then rewrite the header. */
static int rebase(const struct rebase_request *r)
{
    struct bdev *image = NULL, *new_backing = NULL;
    char *prefix = NULL;
    if (asprintf(&prefix, "Could not open '%s'", r->filename) < 0) {
        img_error("out of memory");
        return 1;
    }
    int rc = open_image(prefix, r->filename, r->format, false, false, r->cache, &image);
    free(prefix);
    const char *backing_file = r->backing_file && r->backing_file[0] ? r->backing_file : NULL;
    if (rc == 0 && backing_file && qcow2_image_is(image))
        rc = open_new_backing(r, &new_backing);
    /*
     * qemu-img 7.2 finds a missing -F only when it writes the header, after
     * the copy; refusing first leaves the image untouched, with the same
     * message and exit code.
     */
    if (rc == 0 && backing_file && !r->backing_format && qcow2_image_is(image)) {
        img_error("Could not change the backing file to '%s': backing format must be specified", backing_file);
        rc = -EINVAL;
    }
    struct img_progress progress = {.enabled = r->progress && !r->quiet};
    img_progress_print(&progress, 0);
    if (rc == 0 && qcow2_image_is(image)) {
        char *message = NULL;
        rc = block_rebase(image, new_backing, progress.enabled ? img_progress_fraction : NULL, &progress, &message);
        if (rc < 0)
            img_error("%s", message ? message : strerror(-rc));
        free(message);
    }
    if (rc == 0)
        rc = change_backing(r, image, backing_file);
    if (progress.enabled && rc == 0) {
        img_progress_print(&progress, 100);
        printf("\n");
    }
    if (new_backing)
        bdev_close(new_backing);
    if (image)
        bdev_close(image);
    return rc < 0 ? 1 : 0;
}

/* Lock as lunad and QEMU do (qcow2_lock.h), with qemu-img's messages when refused. */
static int lock_for_writing(int fd, const char *filename)
{
    struct qcow2_lock_failure failure;
    int rc = qcow2_lock(fd, true, &failure);
    if (rc == 0)
        return 0;
    if (rc != -EBUSY)
        img_error("Could not open '%s': cannot lock the image: %s", filename, strerror(-rc));
    else if (failure.kind == QCOW2_LOCK_BYTE_TAKEN)
        img_error("Could not open '%s': Failed to lock byte %d", filename, failure.byte);
    else
        img_error("Could not open '%s': Failed to get %s\"%s\" lock", filename,
                  failure.kind == QCOW2_LOCK_HELD ? "shared " : "", failure.permission);
    return rc;
}

/* Rewrite the backing name and format in the header cluster of the open image file fd. */
static int rewrite_header(const struct rebase_request *r, int fd, const char *backing_file)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int error = errno;
        img_error("Could not open '%s': %s", r->filename, strerror(error));
        return -error;
    }
    struct qcow2_image_header image;
    char *reason = NULL;
    int rc = qcow2_image_header_read(qcow2_read_fd, &fd, (uint64_t)st.st_size, &image, &reason);
    if (rc < 0) {
        img_error("Could not open '%s': %s", r->filename, reason ? reason : strerror(-rc));
        free(reason);
        return rc;
    }
    free(image.backing_file);
    free(image.backing_format);
    image.backing_file = backing_file ? strdup(backing_file) : NULL;
    image.backing_format = backing_file && r->backing_format ? strdup(r->backing_format) : NULL;
    uint64_t cluster_size = qcow2_cluster_size(&image.header);
    uint8_t *buffer = calloc(1, cluster_size);
    bool copied = (!backing_file || image.backing_file) && (!image.backing_file || !r->backing_format ||
                                                            image.backing_format);
    if (!buffer || !copied)
        rc = -ENOMEM;
    else
        rc = qcow2_image_header_encode(&image, buffer, cluster_size);
    if (rc == 0 && pwrite(fd, buffer, cluster_size, 0) != (ssize_t)cluster_size)
        rc = errno ? -errno : -EIO;
    if (rc == 0 && fdatasync(fd) < 0)
        rc = -errno;
    if (rc == -ENOSPC)
        img_error("Could not change the backing file to '%s': No space left in the file header", r->backing_file);
    else if (rc < 0)
        img_error("Could not change the backing file to '%s': %s", r->backing_file ? r->backing_file : "",
                  strerror(-rc));
    free(buffer);
    qcow2_image_header_clear(&image);
    return rc;
}

/*
 * -u: the header alone, through the file, so that an image whose old
 * backing file is gone (the usual reason for -u) can still be repointed,
 * as qemu-img opens it without its backing chain.
 */
static int rebase_unsafe(const struct rebase_request *r)
{
    int fd = open(r->filename, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int error = errno;
        img_error("Could not open '%s': Could not open '%s': %s", r->filename, r->filename, strerror(error));
        return 1;
    }
    const char *backing_file = r->backing_file && r->backing_file[0] ? r->backing_file : NULL;
    bool is_qcow2 = qcow2_probe(r->filename);
    int rc = 0;
    if (r->format && !strcmp(r->format, "qcow2") && !is_qcow2) {
        img_error("Could not open '%s': Image is not in qcow2 format", r->filename);
        rc = -EINVAL;
    } else if ((r->format && !strcmp(r->format, "raw")) || !is_qcow2) {
        img_error("Could not change the backing file to '%s': %s", r->backing_file ? r->backing_file : "",
                  strerror(ENOTSUP));
        rc = -ENOTSUP;
    } else if (backing_file && !r->backing_format) {
        img_error("Could not change the backing file to '%s': backing format must be specified", backing_file);
        rc = -EINVAL;
    }
    if (rc == 0)
        rc = lock_for_writing(fd, r->filename);
    if (rc == 0)
        rc = rewrite_header(r, fd, backing_file);
    if (rc == 0 && r->progress && !r->quiet)
        printf("    (%3.2f/100%%)\r    (%3.2f/100%%)\r\n", 0.0, 100.0);
    close(fd);
    return rc < 0 ? 1 : 0;
}

static bool known_format(const char *format) { return !strcmp(format, "raw") || !strcmp(format, "qcow2"); }

int img_rebase_main(int argc, char **argv)
{
    enum { OPTION_OBJECT = 256, OPTION_IMAGE_OPTS };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, OPTION_OBJECT},
        {"image-opts", no_argument, NULL, OPTION_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {0},
    };
    struct rebase_request r = {.cache = BDEV_CACHE_WRITEBACK, .source_cache = BDEV_CACHE_WRITEBACK};
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":hf:F:b:upt:T:qU", long_options, NULL)) != -1;) {
        switch (c) {
        case 'h': rebase_usage(); return 0;
        case 'f': r.format = optarg; break;
        case 'F': r.backing_format = optarg; break;
        case 'b': r.backing_file = optarg; break;
        case 'u': r.unsafe = true; break;
        case 'p': r.progress = true; break;
        case 'q': r.quiet = true; break;
        case 'U': r.force_share = true; break;
        case 't':
            if (bdev_cache_mode_parse(optarg, &r.cache) < 0) {
                img_error("Invalid cache option: %s", optarg);
                return 1;
            }
            break;
        case 'T':
            if (bdev_cache_mode_parse(optarg, &r.source_cache) < 0) {
                img_error("Invalid source cache option: %s", optarg);
                return 1;
            }
            break;
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
    if (!r.unsafe && !r.backing_file) {
        img_error("Must specify backing file (-b) or use unsafe mode (-u)");
        return img_help_hint();
    }
    if (r.backing_format && !known_format(r.backing_format)) {
        img_error("Invalid format name: '%s'", r.backing_format);
        return 1;
    }
    if (r.format && !known_format(r.format)) {
        img_error("Could not open '%s': Unknown driver '%s'", r.filename, r.format);
        return 1;
    }
    if (r.backing_format && !(r.backing_file && r.backing_file[0]))
        r.backing_format = NULL; /* no backing file: no format to record (qemu-img accepts and drops it) */
    return r.unsafe ? rebase_unsafe(&r) : rebase(&r);
}
