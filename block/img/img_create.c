/*
 * img_create: `luna-img create`, as `qemu-img create` for raw and qcow2:
 * the same flags, -o options, "Formatting ..." line, messages and exit
 * codes.  The qcow2 image itself is written by qcow2_create().
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/bdev.h"
#include "block/img/img.h"
#include "block/qcow2/qcow2.h"
#include "block/qcow2/qcow2_create.h"
#include "block/qcow2/qcow2_format.h"

struct create_request {
    const char *filename;
    const char *format;
    uint64_t size;
    bool size_set;
    const char *size_text;         /* as given, for the Formatting line */
    const char *backing_file;
    const char *backing_format;
    bool unsafe;                   /* -u: do not open the backing file */
    bool quiet;
    struct img_options options;
    /*
     * Message prefixes: for option type errors and for errors while
     * creating.  create: "FILE: " for both; convert: "" and "FILE: error
     * while converting FMT: ", as qemu-img prints them.
     */
    const char *type_prefix;
    const char *create_prefix;
};

static void create_usage(void)
{
    printf("usage: luna-img create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] "
           "filename [size]\n\n"
           "Create a new disk image.  Formats: raw (default), qcow2.\n"
           "  -f fmt           image format\n"
           "  -o options       comma-separated key=value format options; -o help lists them\n"
           "  -b backing_file  qcow2: the backing file (the size defaults to its size)\n"
           "  -F backing_fmt   the backing file's format (raw or qcow2); required with -b\n"
           "  -u               do not open the backing file (a size must be given)\n"
           "  -q               quiet: no 'Formatting' line\n");
}

void img_create_options_help(const char *format)
{
    if (!strcmp(format, "qcow2")) {
        printf("Supported qcow2 options:\n"
               "  backing_file=<str>     - File name of a base image\n"
               "  backing_fmt=<str>      - Image format of the base image\n"
               "  cluster_size=<size>    - qcow2 cluster size\n"
               "  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])\n"
               "  compression_type=<str> - Compression method used for image cluster compression\n"
               "  data_file=<str>        - File name of an external data file\n"
               "  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image\n"
               "  extended_l2=<bool (on/off)> - Extended L2 tables\n"
               "  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n"
               "  preallocation=<str>    - Preallocation mode (allowed values: off, metadata, falloc, full)\n"
               "  refcount_bits=<num>    - Width of a reference count entry in bits\n"
               "  size=<size>            - Virtual disk size\n");
    } else {
        printf("Supported raw options:\n"
               "  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)\n"
               "  size=<size>            - Virtual disk size\n");
    }
}

static void size_error(void)
{
    img_error("Invalid image size specified. You may use k, M, G, T, P or E suffixes for");
    img_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
}

/* Sizes are rounded up to whole sectors, as QEMU's block layer does. */
static uint64_t sector_round(uint64_t size) { return (size + 511) & ~511ull; }

/* Type-level option errors, found before QEMU prints its Formatting line. */
static int take_size_option(struct create_request *r, const char *key, uint64_t *out, bool *set)
{
    const char *value = img_options_take(&r->options, key);
    if (!value)
        return 0;
    if (img_parse_size(value, out) < 0) {
        img_error("%sParameter '%s' expects a non-negative number below 2^64", r->type_prefix, key);
        fprintf(stderr, "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                        "and exabytes, respectively.\n");
        return -EINVAL;
    }
    *set = true;
    return 0;
}

static int take_bool_option(struct create_request *r, const char *key, bool *out, const char **text)
{
    const char *value = img_options_take(&r->options, key);
    *text = value;
    if (value && img_parse_bool(value, out) < 0) {
        img_error("%sParameter '%s' expects 'on' or 'off'", r->type_prefix, key);
        return -EINVAL;
    }
    return 0;
}

/* The backing file's path as QEMU opens it: relative names are relative to the new image. */
static char *backing_path(const char *image, const char *backing)
{
    const char *slash = strrchr(image, '/');
    char *path = NULL;
    if (backing[0] == '/' || !slash)
        return strdup(backing);
    if (asprintf(&path, "%.*s/%s", (int)(slash - image), image, backing) < 0)
        return NULL;
    return path;
}

/* Open the backing file read-only to check it exists and learn its size. */
static int backing_size(const struct create_request *r, uint64_t *size)
{
    char *path = backing_path(r->filename, r->backing_file);
    if (!path)
        return -ENOMEM;
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = path;
    options.readonly = true;
    options.format = !strcmp(r->backing_format, "qcow2") ? BDEV_FORMAT_QCOW2 : BDEV_FORMAT_RAW;
    struct bdev *bdev = NULL;
    char *reason = NULL;
    int rc = bdev_open(&options, &bdev, &reason);
    if (rc < 0) {
        /* bdev's reasons start with the path, which this message names already. */
        const char *why = reason ? reason : strerror(-rc);
        size_t path_length = strlen(path);
        if (!strncmp(why, path, path_length) && !strncmp(why + path_length, ": ", 2))
            why += path_length + 2;
        img_error("%sCould not open '%s': %s", r->create_prefix, r->backing_file, why);
        fprintf(stderr, "Could not open backing image.\n");
    } else {
        *size = bdev->size;
        bdev_close(bdev);
    }
    free(reason);
    free(path);
    return rc;
}

static int create_raw(struct create_request *r)
{
    const char *prealloc_text = img_options_take(&r->options, "preallocation");
    enum qcow2_preallocation prealloc = QCOW2_PREALLOC_OFF;
    const char *unused = img_options_unused(&r->options);
    if (unused) {
        img_error("%sInvalid parameter '%s'", r->type_prefix, unused);
        return 1;
    }
    if (!r->size_set) {
        img_error("%sImage creation needs a size parameter", r->create_prefix);
        return 1;
    }
    if (!r->quiet) {
        printf("Formatting '%s', fmt=raw size=%" PRIu64, r->filename, r->size);
        if (prealloc_text)
            printf(" preallocation=%s", prealloc_text);
        printf("\n");
        fflush(stdout);
    }
    if (prealloc_text && (qcow2_preallocation_parse(prealloc_text, &prealloc) < 0 ||
                          prealloc == QCOW2_PREALLOC_METADATA)) {
        img_error("%sParameter 'preallocation' does not accept value '%s'", r->create_prefix, prealloc_text);
        return 1;
    }
    int fd = open(r->filename, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        img_error("%sCould not create '%s': %s", r->create_prefix, r->filename, strerror(errno));
        return 1;
    }
    uint64_t size = sector_round(r->size);
    int rc = ftruncate(fd, (off_t)size) < 0 ? -errno : 0;
    if (rc == 0 && size && prealloc == QCOW2_PREALLOC_FALLOC)
        rc = -posix_fallocate(fd, 0, (off_t)size);
    if (rc == 0 && prealloc == QCOW2_PREALLOC_FULL) {
        static const char zeroes[65536];
        for (uint64_t at = 0; rc == 0 && at < size;) {
            size_t chunk = size - at < sizeof(zeroes) ? (size_t)(size - at) : sizeof(zeroes);
            ssize_t n = pwrite(fd, zeroes, chunk, (off_t)at);
            if (n < 0 && errno != EINTR)
                rc = -errno;
            else if (n > 0)
                at += (uint64_t)n;
        }
    }
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    if (rc < 0) {
        img_error("%sCould not write the image: %s", r->create_prefix, strerror(-rc));
        return 1;
    }
    return 0;
}

static int parse_compat(const char *text, uint32_t *version)
{
    if (!strcmp(text, "0.10") || !strcmp(text, "v2"))
        *version = 2;
    else if (!strcmp(text, "1.1") || !strcmp(text, "v3"))
        *version = 3;
    else
        return -EINVAL;
    return 0;
}

static int create_qcow2(struct create_request *r)
{
    struct qcow2_create_options o;
    qcow2_create_options_init(&o);
    uint64_t cluster_size = o.cluster_size, refcount_bits = o.refcount_bits;
    bool cluster_set = false;
    const char *compat = img_options_take(&r->options, "compat");
    const char *prealloc = img_options_take(&r->options, "preallocation");
    const char *compression = img_options_take(&r->options, "compression_type");
    const char *option_backing = img_options_take(&r->options, "backing_file");
    const char *option_backing_format = img_options_take(&r->options, "backing_fmt");
    const char *refcount_text = img_options_take(&r->options, "refcount_bits");
    const char *data_file = img_options_take(&r->options, "data_file");
    const char *lazy_text, *extended_text, *data_raw_text;
    if (take_size_option(r, "cluster_size", &cluster_size, &cluster_set) < 0)
        return 1;
    if (take_bool_option(r, "lazy_refcounts", &o.lazy_refcounts, &lazy_text) < 0 ||
        take_bool_option(r, "extended_l2", &o.extended_l2, &extended_text) < 0 ||
        take_bool_option(r, "data_file_raw", &o.data_file_raw, &data_raw_text) < 0)
        return 1;
    if (refcount_text) {
        char *end;
        errno = 0;
        refcount_bits = strtoull(refcount_text, &end, 0);
        if (end == refcount_text || *end || errno || refcount_text[0] == '-') {
            img_error("%sParameter 'refcount_bits' expects a number", r->type_prefix);
            return 1;
        }
    }
    const char *unused = img_options_unused(&r->options);
    if (unused) {
        img_error("%sInvalid parameter '%s'", r->type_prefix, unused);
        return 1;
    }
    /* -b and -F win over the same -o options, as in qemu-img. */
    if (!r->backing_file)
        r->backing_file = option_backing;
    if (!r->backing_format)
        r->backing_format = option_backing_format;

    if (r->backing_file && !r->backing_format) {
        char *path = backing_path(r->filename, r->backing_file);
        img_error("%sBacking file specified without backing format", r->create_prefix);
        if (path && access(path, R_OK) == 0)
            fprintf(stderr, "Detected format of %s.\n", qcow2_probe(path) ? "qcow2" : "raw");
        free(path);
        return 1;
    }
    if (r->backing_format && strcmp(r->backing_format, "raw") && strcmp(r->backing_format, "qcow2")) {
        img_error("%sUnknown backing file format '%s' (luna-img knows raw and qcow2)", r->create_prefix,
                  r->backing_format);
        return 1;
    }
    if (r->backing_file && !r->unsafe) {
        uint64_t size = 0;
        if (backing_size(r, &size) < 0)
            return 1;
        if (!r->size_set) {
            r->size = size;
            r->size_set = true;
        }
    }
    if (!r->size_set) {
        img_error("%sImage creation needs a size parameter", r->create_prefix);
        return 1;
    }

    if (!r->quiet) {
        printf("Formatting '%s', fmt=qcow2 cluster_size=%" PRIu64 " extended_l2=%s", r->filename, cluster_size,
               extended_text ? extended_text : "off");
        if (prealloc)
            printf(" preallocation=%s", prealloc);
        printf(" compression_type=%s size=%" PRIu64, compression ? compression : "zlib", r->size);
        if (compat)
            printf(" compat=%s", compat);
        if (r->backing_file)
            printf(" backing_file=%s", r->backing_file);
        if (r->backing_format)
            printf(" backing_fmt=%s", r->backing_format);
        if (data_file)
            printf(" data_file=%s", data_file);
        if (data_raw_text)
            printf(" data_file_raw=%s", data_raw_text);
        printf(" lazy_refcounts=%s refcount_bits=%" PRIu64 "\n", lazy_text ? lazy_text : "off", refcount_bits);
        fflush(stdout);
    }

    if (compat && parse_compat(compat, &o.version) < 0) {
        img_error("%sParameter 'version' does not accept value '%s'", r->create_prefix, compat);
        return 1;
    }
    if (prealloc && qcow2_preallocation_parse(prealloc, &o.preallocation) < 0) {
        img_error("%sParameter 'preallocation' does not accept value '%s'", r->create_prefix, prealloc);
        return 1;
    }
    if (compression) {
        if (!strcmp(compression, "zlib"))
            o.compression_type = QCOW2_COMPRESSION_ZLIB;
        else if (!strcmp(compression, "zstd"))
            o.compression_type = QCOW2_COMPRESSION_ZSTD;
        else {
            img_error("%sParameter 'compression-type' does not accept value '%s'", r->create_prefix, compression);
            return 1;
        }
    }
    /* Out-of-range values must fail validation, not wrap around in the uint32_t fields. */
    o.cluster_size = cluster_size > UINT32_MAX ? 3 : (uint32_t)cluster_size;
    o.refcount_bits = refcount_bits > 64 ? 3 : (uint32_t)refcount_bits;
    o.size = sector_round(r->size);
    o.backing_file = r->backing_file;
    o.backing_format = r->backing_format;
    o.data_file = data_file;
    char *message = NULL;
    if (qcow2_create(r->filename, &o, &message) < 0) {
        /* qcow2_create's messages start with the path; the prefix says it already. */
        const char *why = message ? message : "could not create the image";
        size_t path_length = strlen(r->filename);
        if (!strncmp(why, r->filename, path_length) && !strncmp(why + path_length, ": ", 2))
            why += path_length + 2;
        img_error("%s%s", r->create_prefix, why);
        free(message);
        return 1;
    }
    return 0;
}

int img_create_main(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct create_request r = {.format = "raw"};
    char *prefix = NULL;
    int status = 1;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":hf:o:b:F:uq", long_options, NULL)) != -1;) {
        switch (c) {
        case 'h':
            create_usage();
            status = 0;
            goto out;
        case 'f': r.format = optarg; break;
        case 'b': r.backing_file = optarg; break;
        case 'F': r.backing_format = optarg; break;
        case 'u': r.unsafe = true; break;
        case 'q': r.quiet = true; break;
        case 'o':
            if (img_options_add(&r.options, optarg))
                goto out;
            break;
        default: /* ':' or '?' */
            img_option_error(c, argv, optind);
            goto out;
        }
    }
    if (strcmp(r.format, "raw") && strcmp(r.format, "qcow2")) {
        img_error("Unknown file format '%s' (luna-img creates raw and qcow2)", r.format);
        goto out;
    }
    if (r.options.help) {
        img_create_options_help(r.format);
        status = 0;
        goto out;
    }
    if (optind >= argc) {
        img_error("Expecting image file name");
        img_help_hint();
        goto out;
    }
    r.filename = argv[optind++];
    if (asprintf(&prefix, "%s: ", r.filename) < 0)
        goto out;
    r.type_prefix = r.create_prefix = prefix;
    bool size_option = false;
    if (take_size_option(&r, "size", &r.size, &size_option) < 0)
        goto out;
    r.size_set = size_option;
    if (optind < argc) {
        r.size_text = argv[optind++];
        uint64_t size;
        int rc = img_parse_size(r.size_text, &size);
        if (rc < 0 || size > INT64_MAX) {
            if (rc == 0 || rc == -ERANGE)
                img_error("Image size must be less than 8 EiB!");
            else
                size_error();
            goto out;
        }
        r.size = size;
        r.size_set = true;
    }
    if (optind < argc) {
        img_error("Unexpected argument: %s", argv[optind]);
        img_help_hint();
        goto out;
    }
    if (!strcmp(r.format, "raw")) {
        if (r.backing_file || img_options_take(&r.options, "backing_file")) {
            img_error("%s: Backing file not supported for file format 'raw'", r.filename);
            goto out;
        }
        status = create_raw(&r);
    } else {
        status = create_qcow2(&r);
    }
out:
    img_options_free(&r.options);
    free(prefix);
    return status;
}

int img_create_for_convert(const char *format, const char *filename, uint64_t size, const char *backing_file,
                           const char *backing_format, struct img_options *options)
{
    struct create_request r = {
        .filename = filename,
        .format = format,
        .size = size,
        .size_set = true,
        .backing_file = backing_file,
        .backing_format = backing_format,
        .unsafe = true, /* the backing file is opened with the new image, as qemu-img convert does */
        .quiet = true,
        .options = *options,
        .type_prefix = "",
    };
    char *prefix = NULL;
    if (asprintf(&prefix, "%s: error while converting %s: ", filename, format) < 0)
        return 1;
    r.create_prefix = prefix;
    int status = !strcmp(format, "raw") ? create_raw(&r) : create_qcow2(&r);
    *options = r.options; /* the caller frees it */
    free(prefix);
    return status;
}
