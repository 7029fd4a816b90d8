/*
 * img_measure: `luna-img measure`, as `qemu-img measure` 7.2: how large a
 * new raw or qcow2 image would be, for a size (--size) or for the content
 * of an existing image, with the same numbers, options and messages.
 *
 * "fully allocated" is the file of an image with every cluster allocated
 * (qcow2_fully_allocated_size, the layout qcow2_create builds); "required"
 * counts, in place of the whole data area, the clusters the source has
 * data in (block status through its backing chain: what reads as zeroes
 * is not counted), or everything with a backing file or full/falloc
 * preallocation.  "bitmaps size" is what the source's persistent bitmaps
 * would take, printed when both images can hold bitmaps (qcow2 v3).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/img/img.h"
#include "block/img/img_status.h"
#include "block/qcow2/qcow2_create.h"
#include "block/qcow2/qcow2_format.h"
#include "block/qcow2/qcow2_image.h"

#define SECTOR 512u
#define ROUND_UP(n, d) (((n) + (d) - 1) / (d) * (d))
#define BITMAP_DIRECTORY_MAX (64u << 20) /* QEMU's QCOW2_MAX_BITMAP_DIRECTORY_SIZE */
#define BITMAP_ENTRY_FIXED 24u

struct measure_info {
    uint64_t required, fully_allocated, bitmaps;
    bool has_bitmaps;
};

/* The qcow2 creation options measure reads, after qemu's checks. */
struct qcow2_measure_options {
    uint64_t cluster_size;
    uint32_t version, refcount_bits;
    bool extended_l2, has_backing_file;
    enum qcow2_preallocation preallocation;
};

static void measure_usage(void)
{
    printf("usage: luna-img measure [--output=ofmt] [-O output_fmt] [-o options]\n"
           "        [--size N | [--object objectdef] [--image-opts] [-f fmt] [-l snapshot_param] filename]\n\n"
           "How large a new image would be: for a virtual size, or to hold an existing image's content.\n"
           "  -O output_fmt   raw (default) or qcow2\n"
           "  -o options      the new image's options, as for create (cluster_size, refcount_bits, ...)\n"
           "  --size N        measure an empty image of N bytes\n"
           "  -f fmt          the source's format (raw, qcow2, vmdk, vdi, vpc); probed when omitted\n"
           "  -l snapshot     measure the source's internal snapshot (id or name, or snapshot.id=,snapshot.name=)\n"
           "  --output=ofmt   human (default) or json\n"
           "  -U              force share: take no image lock\n");
}

/* ---- options ---- */

enum option_type { OPTION_STRING, OPTION_BOOL, OPTION_SIZE_VALUE, OPTION_NUMBER };

struct option_spec {
    const char *name;
    enum option_type type;
};

/* qemu's create options of each format, with the protocol's (file) appended, as measure parses them. */
static const struct option_spec qcow2_specs[] = {
    {"size", OPTION_SIZE_VALUE},         {"compat", OPTION_STRING},         {"backing_file", OPTION_STRING},
    {"backing_fmt", OPTION_STRING},      {"encryption", OPTION_BOOL},       {"cluster_size", OPTION_SIZE_VALUE},
    {"preallocation", OPTION_STRING},    {"lazy_refcounts", OPTION_BOOL},   {"refcount_bits", OPTION_NUMBER},
    {"compression_type", OPTION_STRING}, {"data_file", OPTION_STRING},      {"data_file_raw", OPTION_BOOL},
    {"extended_l2", OPTION_BOOL},        {"nocow", OPTION_BOOL},            {"extent_size_hint", OPTION_SIZE_VALUE},
    {NULL, OPTION_STRING},
};
static const struct option_spec raw_specs[] = {
    {"size", OPTION_SIZE_VALUE}, {"preallocation", OPTION_STRING},       {"nocow", OPTION_BOOL},
    {"extent_size_hint", OPTION_SIZE_VALUE}, {NULL, OPTION_STRING},
};

static bool parse_number(const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!*text || *text == '-')
        return false;
    *out = strtoull(text, &end, 0);
    return !errno && !*end;
}

/* qemu_opts_do_parse: every key known to the format, every value of its type. */
static int check_options(const char *format, const struct option_spec *specs, struct img_options *options)
{
    for (size_t i = 0; i < options->count; i++) {
        const struct img_option *option = &options->items[i];
        const struct option_spec *spec = specs;
        while (spec->name && strcmp(spec->name, option->key))
            spec++;
        bool good = true, flag;
        uint64_t number;
        if (!spec->name)
            img_error("Invalid parameter '%s'", option->key);
        else if (spec->type == OPTION_BOOL && (good = img_parse_bool(option->value, &flag) == 0) == false)
            img_error("Parameter '%s' expects 'on' or 'off'", option->key);
        else if (spec->type == OPTION_SIZE_VALUE && (good = img_parse_size(option->value, &number) == 0) == false)
            img_error("Parameter '%s' expects a non-negative number below 2^64\n"
                      "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                      "and exabytes, respectively.",
                      option->key);
        else if (spec->type == OPTION_NUMBER && (good = parse_number(option->value, &number)) == false)
            img_error("Parameter '%s' expects a number", option->key);
        if (!spec->name || !good) {
            img_error("Invalid options for file format '%s'", format);
            return 1;
        }
    }
    if (options->help) {
        img_error("Invalid parameter 'help'");
        img_error("Invalid options for file format '%s'", format);
        return 1;
    }
    return 0;
}

static bool power_of_two(uint64_t value) { return value && !(value & (value - 1)); }

/* qcow2_measure's reading of the options, in its order and with its messages. */
static int qcow2_options(struct img_options *options, struct qcow2_measure_options *out)
{
    const char *value;
    *out = (struct qcow2_measure_options){.cluster_size = 65536, .version = 3, .refcount_bits = 16};
    if ((value = img_options_take(options, "extended_l2")))
        img_parse_bool(value, &out->extended_l2);
    if ((value = img_options_take(options, "cluster_size")))
        img_parse_size(value, &out->cluster_size);
    if (!power_of_two(out->cluster_size) || out->cluster_size < 512 || out->cluster_size > (2u << 20)) {
        img_error("Cluster size must be a power of two between 512 and 2048k");
        return 1;
    }
    if (out->extended_l2 && out->cluster_size < 16384) {
        img_error("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
        return 1;
    }
    if ((value = img_options_take(options, "compat"))) {
        if (!strcmp(value, "0.10"))
            out->version = 2;
        else if (!strcmp(value, "1.1"))
            out->version = 3;
        else {
            img_error("Invalid compatibility level: '%s'", value);
            return 1;
        }
    }
    uint64_t refcount_bits = 16;
    if ((value = img_options_take(options, "refcount_bits")))
        parse_number(value, &refcount_bits);
    if (refcount_bits > 64 || !power_of_two(refcount_bits)) {
        img_error("Refcount width must be a power of two and may not exceed 64 bits");
        return 1;
    }
    if (out->version < 3 && refcount_bits != 16) {
        img_error("Different refcount widths than 16 bits require compatibility level 1.1 or above "
                  "(use compat=1.1 or greater)");
        return 1;
    }
    out->refcount_bits = (uint32_t)refcount_bits;
    if ((value = img_options_take(options, "preallocation")) &&
        qcow2_preallocation_parse(value, &out->preallocation) < 0) {
        img_error("invalid parameter value: %s", value);
        return 1;
    }
    out->has_backing_file = img_options_take(options, "backing_file") != NULL;
    return 0;
}

/* ---- the source ---- */

/* What the source holds data in, in clusters of the new image (qemu's walk: zeroes skipped). */
static int source_required(struct img_chain *chain, uint64_t cluster_size, uint64_t *required)
{
    uint64_t size = img_chain_top(chain)->size, pnum;
    *required = 0;
    for (uint64_t offset = 0; offset < size; offset += pnum) {
        struct img_status status;
        int rc = img_status_above(chain, offset, size - offset, &status);
        if (rc < 0)
            return rc;
        if (status.length == 0)
            return -EIO;
        pnum = status.length;
        if (status.flags & IMG_STATUS_ZERO)
            continue;
        if ((status.flags & (IMG_STATUS_DATA | IMG_STATUS_ALLOCATED)) == (IMG_STATUS_DATA | IMG_STATUS_ALLOCATED)) {
            /* The cluster is counted whole; the next look starts at the next cluster. */
            pnum = ROUND_UP(offset + pnum, cluster_size) - offset;
            *required += offset % cluster_size + pnum;
        }
    }
    return 0;
}

/*
 * qemu's qcow2_get_persistent_dirty_bitmap_size: every bitmap of the
 * source fully allocated in the new image's clusters, with its table and
 * its directory entry.  Bitmaps count only while the autoclear bit says
 * they are consistent with the image, as QEMU loads them.
 */
static int bitmaps_size(struct bdev *source, int fd, uint64_t file_size, uint64_t cluster_size, uint64_t *out)
{
    const struct qcow2_image_header *image = qcow2_image_header(source);
    *out = 0;
    if (!(image->header.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS))
        return 0;
    const struct qcow2_extension *extension = NULL;
    for (size_t i = 0; i < image->extension_count; i++)
        if (image->extensions[i].type == QCOW2_EXT_BITMAPS)
            extension = &image->extensions[i];
    if (!extension)
        return 0;
    if (extension->length < 24)
        return -EINVAL;
    uint32_t count = qcow2_be32(extension->data);
    uint64_t directory_size = qcow2_be64(extension->data + 8), directory_offset = qcow2_be64(extension->data + 16);
    if (directory_size > BITMAP_DIRECTORY_MAX || directory_offset > file_size ||
        directory_size > file_size - directory_offset)
        return -EINVAL;
    uint8_t *directory = malloc(directory_size ? directory_size : 1);
    if (!directory)
        return -ENOMEM;
    int rc = qcow2_read_fd(&fd, directory, directory_size, directory_offset);
    uint64_t total = 0, directory_bytes = 0, position = 0;
    for (uint32_t i = 0; rc == 0 && i < count; i++) {
        if (directory_size - position < BITMAP_ENTRY_FIXED) {
            rc = -EINVAL;
            break;
        }
        const uint8_t *entry = directory + position;
        unsigned granularity_bits = entry[17];
        uint64_t name_size = qcow2_be16(entry + 18), extra_size = qcow2_be32(entry + 20);
        uint64_t entry_size = ROUND_UP(BITMAP_ENTRY_FIXED + extra_size + name_size, 8);
        if (granularity_bits > 63 || entry_size > directory_size - position) {
            rc = -EINVAL;
            break;
        }
        uint64_t bits = (source->size + (1ull << granularity_bits) - 1) >> granularity_bits;
        uint64_t clusters = (bits + 7) / 8 / cluster_size + ((bits + 7) / 8 % cluster_size != 0);
        total += clusters * cluster_size + ROUND_UP(clusters * 8, cluster_size);
        directory_bytes += ROUND_UP(BITMAP_ENTRY_FIXED + name_size, 8);
        position += entry_size;
    }
    free(directory);
    if (rc == 0)
        *out = total + ROUND_UP(directory_bytes, cluster_size);
    return rc;
}

static int measure_qcow2(struct img_options *options, uint64_t size, struct img_chain *source,
                         struct measure_info *info)
{
    struct qcow2_measure_options o;
    if (qcow2_options(options, &o))
        return 1;
    uint64_t virtual_size = ROUND_UP(size, o.cluster_size);
    uint64_t l2_entry_size = o.extended_l2 ? 16 : 8;
    uint64_t l2_tables = (virtual_size / o.cluster_size + o.cluster_size / l2_entry_size - 1) /
                         (o.cluster_size / l2_entry_size);
    if (l2_tables * 8 > QCOW2_MAX_L1_BYTES) {
        img_error("The image size is too large (try using a larger cluster size)");
        return 1;
    }
    uint64_t required = 0;
    if (source) {
        virtual_size = ROUND_UP(img_chain_top(source)->size, o.cluster_size);
        if (o.has_backing_file) {
            /* The new image's backing file may share nothing with the source: count everything. */
            required = virtual_size;
        } else {
            int rc = source_required(source, o.cluster_size, &required);
            if (rc < 0) {
                img_error("Unable to get block status: %s", strerror(-rc));
                return 1;
            }
        }
    }
    if (o.preallocation == QCOW2_PREALLOC_FULL || o.preallocation == QCOW2_PREALLOC_FALLOC)
        required = virtual_size;
    info->fully_allocated = qcow2_fully_allocated_size(virtual_size, o.cluster_size, o.refcount_bits, o.extended_l2);
    info->required = info->fully_allocated - virtual_size + required;
    struct bdev *top = source ? img_chain_top(source) : NULL;
    info->has_bitmaps = o.version >= 3 && top && qcow2_image_is(top) && qcow2_image_header(top)->header.version >= 3;
    if (info->has_bitmaps) {
        int rc = bitmaps_size(top, source->layers[0].fd, source->layers[0].file_size, o.cluster_size, &info->bitmaps);
        if (rc < 0) {
            img_error("Could not read the bitmap directory of '%s': %s", top->filename, strerror(-rc));
            return 1;
        }
    }
    return 0;
}

static int parse_size_argument(const char *text, uint64_t *out)
{
    int rc = img_parse_size(text, out);
    if (rc == 0 && *out > INT64_MAX)
        rc = -ERANGE;
    if (rc == -ERANGE) {
        img_error("Invalid image size specified. Must be between 0 and %" PRId64 ".", INT64_MAX);
        return 1;
    }
    if (rc < 0) {
        img_error("Invalid image size specified. You may use k, M, G, T, P or E suffixes for");
        img_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return 1;
    }
    return 0;
}

/* Formats qemu-img knows that cannot be measured (luna-img creates none of them either). */
static bool format_without_measure(const char *format)
{
    static const char *const names[] = {"vmdk", "vdi", "vpc", "vhdx", "qed", "qcow", "parallels", "luks", NULL};
    for (const char *const *name = names; *name; name++)
        if (!strcmp(*name, format))
            return true;
    return false;
}

static void print_info(const struct measure_info *info, bool json)
{
    if (json) {
        printf("{\n");
        if (info->has_bitmaps)
            printf("    \"bitmaps\": %" PRIu64 ",\n", info->bitmaps);
        printf("    \"required\": %" PRIu64 ",\n    \"fully-allocated\": %" PRIu64 "\n}\n", info->required,
               info->fully_allocated);
        return;
    }
    printf("required size: %" PRIu64 "\nfully allocated size: %" PRIu64 "\n", info->required, info->fully_allocated);
    if (info->has_bitmaps)
        printf("bitmaps size: %" PRIu64 "\n", info->bitmaps);
}

struct measure_request {
    const char *filename, *format, *output_format;
    bool json, force_share, image_opts, size_given;
    uint64_t size;
    struct img_options options;
    struct img_snapshot_choice snapshot; /* -l */
};

static int measure_run(struct measure_request *r)
{
    struct img_chain chain = {0};
    bool have_source = false;
    if (r->filename) {
        if (img_chain_open_spec(r->filename, r->image_opts, r->format, r->force_share, BDEV_CACHE_WRITEBACK,
                                &r->snapshot, &chain) < 0)
            return 1;
        have_source = true;
    }
    int status = 1;
    bool qcow2 = !strcmp(r->output_format, "qcow2"), raw = !strcmp(r->output_format, "raw");
    if (!qcow2 && !raw && !format_without_measure(r->output_format)) {
        img_error("Unknown file format '%s'", r->output_format);
        goto out;
    }
    if (!qcow2 && !raw) {
        img_error("Block driver '%s' does not support size measurement", r->output_format);
        goto out;
    }
    if (check_options(r->output_format, qcow2 ? qcow2_specs : raw_specs, &r->options))
        goto out;
    uint64_t size = 0;
    const char *size_option = img_options_take(&r->options, "size");
    if (size_option)
        img_parse_size(size_option, &size);
    if (r->size_given)
        size = r->size;
    size = ROUND_UP(size, SECTOR);
    struct measure_info info = {0};
    if (qcow2) {
        if (measure_qcow2(&r->options, size, have_source ? &chain : NULL, &info))
            goto out;
    } else {
        /* Every byte of a raw image counts, allocated or not. */
        info.required = have_source ? ROUND_UP(img_chain_top(&chain)->size, SECTOR) : size;
        info.fully_allocated = info.required;
    }
    print_info(&info, r->json);
    status = 0;
out:
    if (have_source)
        img_chain_close(&chain);
    return status;
}

int img_measure_main(int argc, char **argv)
{
    enum { OPTION_OUTPUT = 256, OPTION_OBJECT, OPTION_IMAGE_OPTS, OPTION_SIZE };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"image-opts", no_argument, NULL, OPTION_IMAGE_OPTS},
        {"object", required_argument, NULL, OPTION_OBJECT},
        {"output", required_argument, NULL, OPTION_OUTPUT},
        {"size", required_argument, NULL, OPTION_SIZE},
        {"force-share", no_argument, NULL, 'U'},
        {0},
    };
    struct measure_request r = {.output_format = "raw"};
    int status = 1;
    optind = 1;
    /*
     * qemu-img measure lets getopt report a bad option ("measure: invalid
     * option -- 'x'") and then shows the help and exits 0: so does this.
     */
    for (int c; (c = getopt_long(argc, argv, "hf:O:o:l:U", long_options, NULL)) != -1;) {
        switch (c) {
        case 'h': measure_usage(); status = 0; goto out;
        case 'f': r.format = optarg; break;
        case 'O': r.output_format = optarg; break;
        case 'o':
            if (img_options_add(&r.options, optarg))
                goto out;
            break;
        case 'l':
            img_snapshot_choice_free(&r.snapshot);
            if (img_snapshot_param_parse(optarg, &r.snapshot))
                goto out;
            break;
        case 'U': r.force_share = true; break;
        case OPTION_OBJECT: break; /* secrets and the like: nothing luna-img reads needs them */
        case OPTION_IMAGE_OPTS: r.image_opts = true; break;
        case OPTION_OUTPUT:
            if (img_parse_output(optarg, &r.json))
                goto out;
            break;
        case OPTION_SIZE:
            if (parse_size_argument(optarg, &r.size))
                goto out;
            r.size_given = true;
            break;
        default: measure_usage(); status = 0; goto out;
        }
    }
    if (argc - optind > 1) {
        img_error("At most one filename argument is allowed.");
        goto out;
    }
    if (argc - optind == 1)
        r.filename = argv[optind];
    if (!r.filename && (r.image_opts || r.format || r.snapshot.id || r.snapshot.name || r.snapshot.any)) {
        img_error("--image-opts, -f, and -l require a filename argument.");
        goto out;
    }
    if (r.filename && r.size_given) {
        img_error("--size N cannot be used together with a filename.");
        goto out;
    }
    if (!r.filename && !r.size_given) {
        img_error("Either --size N or one filename must be specified.");
        goto out;
    }
    status = measure_run(&r);
out:
    img_options_free(&r.options);
    img_snapshot_choice_free(&r.snapshot);
    return status;
}
