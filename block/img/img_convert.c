/*
 * img_convert: `luna-img convert`, as `qemu-img convert` for raw and qcow2:
 * the same flags, messages, progress output and exit codes.  This file
 * parses, creates and opens; the copy itself is img_copy's, run on a libev
 * loop of this thread with -m requests in flight.
 */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/aio.h"
#include "block/bdev.h"
#include "block/img/img.h"
#include "block/img/img_copy.h"
#include "block/qcow2/qcow2.h"

#define MAX_SPARSE (16u << 20) /* qemu-img's limit for -S */

struct convert_request {
    const char *source_format;  /* -f; NULL: probe */
    const char *output_format;  /* -O */
    const char *backing_file;   /* -B */
    const char *backing_format; /* -F */
    uint64_t min_sparse;        /* -S */
    uint32_t parallel;          /* -m */
    bool skip_create;           /* -n */
    bool progress;              /* -p */
    bool quiet;                 /* -q */
    bool force_share;           /* -U: read sources without locking them */
    bool out_of_order;          /* -W */
    bool compress;              /* -c */
    bool target_is_zero;        /* --target-is-zero */
    enum bdev_cache_mode cache;        /* -t */
    enum bdev_cache_mode source_cache; /* -T */
    struct img_options options;
    struct img_snapshot_choice snapshot; /* -l */
};

static void convert_usage(void)
{
    printf("usage: luna-img convert [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt]\n"
           "        [-B backing_file [-F backing_fmt]] [-o options] [-S sparse_size] [-m num_coroutines] [-W]\n"
           "        [-U] filename [filename2 [...]] output_filename\n\n"
           "Convert (and concatenate) images to output_filename.  Formats: raw, qcow2.\n"
           "  -f fmt          the input format (raw, qcow2, vmdk, vdi, vpc); probed when omitted\n"
           "  -l snapshot     read the input's internal snapshot (id or name, or snapshot.id=,snapshot.name=)\n"
           "  -O output_fmt   the output format (raw by default)\n"
           "  -o options      output format options, as for create; -o help lists them\n"
           "  -B backing_file qcow2: make the output an overlay of backing_file, holding only what differs\n"
           "  -F backing_fmt  the backing file's format; required with -B\n"
           "  -S sparse_size  blocks of this many zero bytes are not written (default 4k; 0: write all)\n"
           "  -n              do not create the output: it must exist and be large enough\n"
           "  -c              qcow2: compress the output's clusters (zlib or zstd: -o compression_type)\n"
           "  -m num          requests in flight, 1 to 16 (default 8)\n"
           "  -W              allow writes out of order\n"
           "  -t cache        the output's cache mode (default unsafe)\n"
           "  -T src_cache    the inputs' cache mode (default writeback)\n"
           "  -p              show progress\n"
           "  -q              quiet\n"
           "  -U              force share: read sources without locking them (images others write)\n"
           "  --target-is-zero  with -n: the output already reads as zeroes\n");
}

static void progress_callback(void *opaque, double percent) { img_progress_print(opaque, percent); }

static int parse_sparse(const char *text, uint64_t *out)
{
    uint64_t value;
    if (img_parse_size(text, &value) < 0) {
        img_error("Invalid buffer size for sparse output specified. You may use k, M, G, T, P or E suffixes for");
        img_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return -EINVAL;
    }
    if (value % 512 || value > MAX_SPARSE) {
        img_error("Invalid buffer size for sparse output specified. Valid sizes are multiples of %u up to %u. "
                  "Select 0 to disable sparse detection (fully allocates output).",
                  512u, MAX_SPARSE);
        return -EINVAL;
    }
    *out = value;
    return 0;
}

static bool known_format(const char *format) { return !strcmp(format, "raw") || !strcmp(format, "qcow2"); }

static int convert(struct convert_request *r, char **inputs, int input_count, const char *output)
{
    int status = 1;
    struct bdev **sources = calloc((size_t)input_count, sizeof(*sources));
    struct bdev *target = NULL;
    struct ev_loop *loop = NULL;
    struct aio_context *ctx = NULL;
    if (!sources) {
        img_error("out of memory");
        return 1;
    }
    uint64_t total = 0;
    for (int i = 0; i < input_count; i++) {
        if (img_open_snapshot(inputs[i], r->source_format, r->force_share, r->source_cache, &r->snapshot,
                              &sources[i]) < 0)
            goto out;
        total += sources[i]->size;
    }
    if (!r->skip_create &&
        img_create_for_convert(r->output_format, output, total, r->backing_file, r->backing_format, &r->options))
        goto out;
    if (img_open_image(output, r->output_format, false, false, r->cache, &target) < 0)
        goto out;
    if (target->size < total) {
        img_error("output file is smaller than input file");
        goto out;
    }
    if (r->compress && !(target->caps & BDEV_CAP_COMPRESS)) {
        img_error("Compression not supported for this file format");
        goto out;
    }
    loop = ev_loop_new(EVFLAG_AUTO);
    ctx = loop ? aio_context_new(loop) : NULL;
    if (!ctx) {
        img_error("Could not set up the event loop");
        goto out;
    }
    struct img_progress progress = {.enabled = r->progress && !r->quiet};
    struct img_copy_options options = {
        .sources = sources,
        .source_count = (size_t)input_count,
        .target = target,
        .target_reads_zero = (!r->skip_create && !r->backing_file) || r->target_is_zero,
        .compare_target = r->backing_file != NULL,
        .compress = r->compress,
        .out_of_order = r->out_of_order,
        .min_sparse = r->min_sparse,
        .parallel = r->parallel,
        .progress = progress.enabled ? progress_callback : NULL,
        .progress_opaque = &progress,
    };
    img_progress_print(&progress, 0);
    char *message = NULL;
    int rc = img_copy_run(ctx, &options, &message);
    if (rc < 0) {
        img_error("%s", message ? message : strerror(-rc));
        free(message);
        goto out;
    }
    if (progress.enabled) {
        /* qemu-img ends with 100% twice, then a newline. */
        if (progress.last_print != 100)
            img_progress_print(&progress, 100);
        img_progress_print(&progress, 100);
        printf("\n");
    }
    status = 0;
out:
    if (target)
        bdev_close(target);
    for (int i = 0; i < input_count; i++)
        if (sources[i])
            bdev_close(sources[i]);
    free(sources);
    if (ctx)
        aio_context_free(ctx);
    if (loop)
        ev_loop_destroy(loop);
    return status;
}

int img_convert_main(int argc, char **argv)
{
    enum { OPTION_TARGET_IS_ZERO = 256 };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"target-is-zero", no_argument, NULL, OPTION_TARGET_IS_ZERO},
        {0},
    };
    struct convert_request r = {
        .output_format = "raw",
        .min_sparse = 4096,
        .parallel = IMG_COPY_DEFAULT_PARALLEL,
        .cache = BDEV_CACHE_UNSAFE,
        .source_cache = BDEV_CACHE_WRITEBACK,
    };
    int status = 1;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":hf:O:o:B:F:S:m:t:T:l:npqWUc", long_options, NULL)) != -1;) {
        char *end;
        switch (c) {
        case 'h':
            convert_usage();
            status = 0;
            goto out;
        case 'f': r.source_format = optarg; break;
        case 'O': r.output_format = optarg; break;
        case 'B': r.backing_file = optarg; break;
        case 'l':
            img_snapshot_choice_free(&r.snapshot);
            if (img_snapshot_param_parse(optarg, &r.snapshot))
                goto out;
            break;
        case 'F': r.backing_format = optarg; break;
        case 'n': r.skip_create = true; break;
        case 'p': r.progress = true; break;
        case 'q': r.quiet = true; break;
        case 'W': r.out_of_order = true; break;
        case 'U': r.force_share = true; break;
        case 'c': r.compress = true; break;
        case OPTION_TARGET_IS_ZERO: r.target_is_zero = true; break;
        case 'S':
            if (parse_sparse(optarg, &r.min_sparse) < 0)
                goto out;
            break;
        case 'm': {
            errno = 0;
            long value = strtol(optarg, &end, 10);
            if (end == optarg || *end || errno || value < 1 || value > IMG_COPY_MAX_PARALLEL) {
                img_error("Invalid number of coroutines. Allowed number of coroutines is between 1 and %d",
                          IMG_COPY_MAX_PARALLEL);
                goto out;
            }
            r.parallel = (uint32_t)value;
            break;
        }
        case 't':
            if (bdev_cache_mode_parse(optarg, &r.cache) < 0) {
                img_error("Invalid cache option: %s", optarg);
                goto out;
            }
            break;
        case 'T':
            if (bdev_cache_mode_parse(optarg, &r.source_cache) < 0) {
                img_error("Invalid source cache option: %s", optarg);
                goto out;
            }
            break;
        case 'o':
            if (img_options_add(&r.options, optarg))
                goto out;
            break;
        default: /* ':' or '?' */
            img_option_error(c, argv, optind);
            goto out;
        }
    }
    if (!known_format(r.output_format)) {
        img_error("Unknown file format '%s'", r.output_format);
        goto out;
    }
    if (r.source_format && !img_input_format_known(r.source_format)) {
        if (optind < argc)
            img_error("Could not open '%s': Unknown driver '%s'", argv[optind], r.source_format);
        else
            img_error("Unknown driver '%s'", r.source_format);
        goto out;
    }
    if (r.options.help) {
        img_create_options_help(r.output_format);
        status = 0;
        goto out;
    }
    int input_count = argc - optind - 1;
    if (input_count < 1) {
        img_error("Must specify image file name");
        goto out;
    }
    const char *output = argv[argc - 1];
    /* -o backing_file / backing_fmt are -B / -F (which win), as in qemu-img. */
    const char *option_backing = img_options_take(&r.options, "backing_file");
    const char *option_backing_format = img_options_take(&r.options, "backing_fmt");
    if (!r.backing_file)
        r.backing_file = option_backing;
    if (!r.backing_format)
        r.backing_format = option_backing_format;
    bool raw_output = !strcmp(r.output_format, "raw");
    if (r.backing_file && raw_output) {
        img_error("Backing file not supported for file format '%s'", r.output_format);
        goto out;
    }
    if (r.backing_format && raw_output) {
        img_error("Backing file format not supported for file format '%s'", r.output_format);
        goto out;
    }
    if (r.backing_file && !r.backing_format) {
        img_error("Use of backing file requires explicit backing format");
        goto out;
    }
    if (r.backing_format && !img_input_format_known(r.backing_format)) {
        img_error("Unknown backing file format '%s' (luna-img knows raw, qcow2, vmdk, vdi and vpc)", r.backing_format);
        goto out;
    }
    if (r.compress && raw_output) {
        img_error("Compression not supported for this file format");
        goto out;
    }
    if (r.compress) {
        const char *prealloc = img_options_take(&r.options, "preallocation");
        if (prealloc && strcmp(prealloc, "off")) {
            img_error("Compression and preallocation not supported at the same time");
            goto out;
        }
    }
    if (r.backing_file && input_count > 1) {
        img_error("Having a backing file for the target makes no sense when concatenating multiple input images");
        goto out;
    }
    if (r.target_is_zero && !r.skip_create) {
        img_error("--target-is-zero requires use of -n flag");
        goto out;
    }
    if (r.target_is_zero && r.backing_file) {
        img_error("Cannot use --target-is-zero when the destination image has a backing file");
        goto out;
    }
    if (r.skip_create && r.backing_file) {
        /* The existing output keeps its own backing file: compare against what it reads. */
        r.backing_file = NULL;
        r.backing_format = NULL;
    }
    if ((r.snapshot.id || r.snapshot.name || r.snapshot.any) && input_count > 1) {
        img_error("No support for concatenating multiple snapshot");
        goto out;
    }
    status = convert(&r, argv + optind, input_count, output);
out:
    img_options_free(&r.options);
    img_snapshot_choice_free(&r.snapshot);
    return status;
}
