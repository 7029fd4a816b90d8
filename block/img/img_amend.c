/*
 * luna-img amend: change a qcow2 image's options in place with qemu-img
 * 7.2's syntax, checks, messages and exit codes: compat (up and down),
 * lazy_refcounts, size, and the options whose only allowed value is the
 * one the image has (backing file and format, data_file_raw).  The work
 * is the driver's (qcow2_image.h).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/img/img.h"
#include "block/qcow2/qcow2_image.h"
#include "block/qcow2/qcow2_snapshots.h"

/* What amend takes, in qemu-img's -o help order. */
static const char *const amend_keys[] = {
    "backing_file", "backing_fmt", "compat", "data_file", "data_file_raw", "encrypt.iter-time", "encrypt.keyslot",
    "encrypt.new-secret", "encrypt.old-secret", "encrypt.state", "lazy_refcounts", "refcount_bits", "size",
};

/* What only create takes: naming one gets qemu-img's hint. */
static const char *const create_only_keys[] = {
    "cluster_size", "preallocation", "compression_type", "extended_l2", "encryption", "encrypt.format",
    "encrypt.key-secret", "encrypt.cipher-alg", "encrypt.cipher-mode", "encrypt.ivgen-alg",
    "encrypt.ivgen-hash-alg", "encrypt.hash-alg", "nocow",
};

static bool key_in(const char *key, const char *const *keys, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (!strcmp(key, keys[i]))
            return true;
    return false;
}

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* qemu-img's is_valid_option_list: no empty list, no empty first or last item ("a,,b" escapes a comma). */
static bool option_list_valid(const char *text)
{
    size_t length = strlen(text), trailing = 0;
    while (trailing < length && text[length - 1 - trailing] == ',')
        trailing++;
    return length && text[0] != ',' && trailing % 2 == 0;
}

static void amend_usage(void)
{
    printf("usage: luna-img amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] "
           "-o options filename\n\n"
           "Change a qcow2 image's options in place (-o help lists them).\n"
           "  -o compat=0.10|v2|1.1|v3   the format version (downgrading expands zero clusters)\n"
           "  -o lazy_refcounts=on|off   the lazy refcounts bit (v3 only)\n"
           "  -o size=SIZE               the virtual size (a shrink drops what lies past the end)\n"
           "  -p                         show progress\n"
           "  -q                         quiet\n");
}

static void options_help(void)
{
    printf("Amend options for 'qcow2':\n"
           "  backing_file=<str>     - File name of a base image\n"
           "  backing_fmt=<str>      - Image format of the base image\n"
           "  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])\n"
           "  data_file=<str>        - File name of an external data file\n"
           "  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image\n"
           "  encrypt.iter-time=<num> - Time to spend in PBKDF in milliseconds\n"
           "  encrypt.keyslot=<num>  - Select a single keyslot to modify explicitly\n"
           "  encrypt.new-secret=<str> - New secret to set in the matching keyslots. Empty string to erase\n"
           "  encrypt.old-secret=<str> - Select all keyslots that match this password\n"
           "  encrypt.state=<str>    - Select new state of affected keyslots (active/inactive)\n"
           "  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n"
           "  refcount_bits=<num>    - Width of a reference count entry in bits\n"
           "  size=<size>            - Virtual disk size\n");
}

/* qemu's option check: every key amendable, else the first that is not (with a hint for create-only ones). */
static int options_check(struct img_options *options)
{
    const char *bad = NULL;
    bool all_known = true;
    for (size_t i = 0; i < options->count; i++) {
        const char *key = options->items[i].key;
        if (key_in(key, amend_keys, COUNT(amend_keys)))
            continue;
        if (!bad)
            bad = key;
        all_known &= key_in(key, create_only_keys, COUNT(create_only_keys));
    }
    if (!bad)
        return 0;
    img_error("Invalid parameter '%s'", bad);
    if (all_known)
        fprintf(stderr, "This option is only supported for image creation\n");
    return -EINVAL;
}

struct amend_plan {
    uint32_t version;         /* 0: unchanged */
    int lazy_refcounts;       /* -1: unchanged */
    uint64_t size;            /* 0: unchanged */
    int refcount_order;       /* -1: unchanged */
};

/*
 * v2 readers know neither a snapshot's own size nor a VM state past 4 GiB:
 * QEMU refuses to downgrade when a snapshot has either (one that records
 * no size has the image's size when opened).  An unreadable table counts
 * as preventing it.
 */
static bool snapshots_prevent_downgrade(struct bdev *bdev, uint64_t new_size)
{
    struct qcow2_snapshot_table table = {0};
    if (qcow2_image_snapshot_list(bdev, &table) < 0)
        return true;
    bool prevented = false;
    for (uint32_t i = 0; i < table.count; i++) {
        const struct qcow2_snapshot *snapshot = &table.entries[i];
        uint64_t size = snapshot->disk_size == UINT64_MAX ? bdev->size : snapshot->disk_size;
        prevented |= snapshot->vm_state_size > UINT32_MAX || size != new_size;
    }
    qcow2_snapshot_table_clear(&table);
    return prevented;
}

/* Read the options into a plan, in qemu-img's order of checks.  0 or -errno after the message. */
static int plan_options(struct img_options *options, struct bdev *bdev, struct amend_plan *plan)
{
    const struct qcow2_image_header *image = qcow2_image_header(bdev);
    const struct qcow2_header *h = &image->header;
    *plan = (struct amend_plan){.lazy_refcounts = -1, .refcount_order = -1};
    const char *compat = img_options_take(options, "compat");
    if (compat) {
        if (!strcmp(compat, "0.10") || !strcmp(compat, "v2"))
            plan->version = 2;
        else if (!strcmp(compat, "1.1") || !strcmp(compat, "v3"))
            plan->version = 3;
        else {
            img_error("Unknown compatibility level %s", compat);
            return -EINVAL;
        }
    }
    const char *size = img_options_take(options, "size");
    if (size && img_parse_size(size, &plan->size) < 0) {
        img_error("Parameter 'size' expects a non-negative number below 2^64");
        fprintf(stderr, "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                        "and exabytes, respectively.\n");
        return -EINVAL;
    }
    for (size_t i = 0; i < options->count; i++)
        if (!strncmp(options->items[i].key, "encrypt.", 8)) {
            img_error("Can't amend encryption options - encryption not present");
            return -EINVAL;
        }
    const char *lazy = img_options_take(options, "lazy_refcounts");
    if (lazy) {
        bool on;
        if (img_parse_bool(lazy, &on) < 0) {
            img_error("Parameter 'lazy_refcounts' expects 'on' or 'off'");
            return -EINVAL;
        }
        plan->lazy_refcounts = on;
    }
    const char *refcount_bits = img_options_take(options, "refcount_bits");
    if (refcount_bits) {
        char *end;
        unsigned long bits = strtoul(refcount_bits, &end, 10);
        if (*end || !bits || bits > 64 || (bits & (bits - 1))) {
            img_error("Refcount width must be a power of two and may not exceed 64 bits");
            return -EINVAL;
        }
        if (bits != (1ul << h->refcount_order))
            plan->refcount_order = __builtin_ctzl(bits);
    }
    const char *data_file = img_options_take(options, "data_file");
    if (data_file && !image->data_file) {
        img_error("data-file can only be set for images that use an external data file");
        return -EINVAL;
    }
    if (data_file && strcmp(data_file, image->data_file)) {
        img_error("Changing the data file name is not supported by luna-img");
        return -ENOTSUP;
    }
    const char *data_file_raw = img_options_take(options, "data_file_raw");
    bool raw_wanted;
    if (data_file_raw && img_parse_bool(data_file_raw, &raw_wanted) < 0) {
        img_error("Parameter 'data_file_raw' expects 'on' or 'off'");
        return -EINVAL;
    }
    if (data_file_raw && raw_wanted && !(h->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW)) {
        img_error("data-file-raw cannot be set on existing images");
        return -EINVAL;
    }
    const char *backing_file = img_options_take(options, "backing_file");
    const char *backing_format = img_options_take(options, "backing_fmt");
    if ((backing_file || backing_format) &&
        ((backing_file ? !image->backing_file || strcmp(backing_file, image->backing_file) : !!image->backing_file) ||
         (backing_format ? !image->backing_format || strcmp(backing_format, image->backing_format)
                         : !!image->backing_format))) {
        img_error("Cannot amend the backing file");
        fprintf(stderr, "You can use 'qemu-img rebase' instead.\n");
        return -EINVAL;
    }
    uint32_t version = plan->version ? plan->version : h->version;
    if (plan->lazy_refcounts == 1 && version < 3) {
        img_error("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
        return -EINVAL;
    }
    if (plan->refcount_order >= 0 && plan->refcount_order != 4 && version < 3) {
        img_error("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or "
                  "greater)");
        return -EINVAL;
    }
    if (plan->version == 2 && h->version >= 3) {
        if ((plan->refcount_order >= 0 ? (uint32_t)plan->refcount_order : h->refcount_order) != 4) {
            img_error("compat=0.10 requires refcount_bits=16");
            return -ENOTSUP;
        }
        if (image->data_file) {
            img_error("Cannot downgrade an image with a data file");
            return -ENOTSUP;
        }
        if (snapshots_prevent_downgrade(bdev, plan->size ? plan->size : bdev->size)) {
            img_error("Internal snapshots prevent downgrade of image");
            return -ENOTSUP;
        }
        uint64_t incompatible = h->incompatible_features & ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_COMPRESSION);
        bool compressed = false;
        if ((h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) &&
            qcow2_image_compressed_clusters(bdev, &compressed) == 0 && compressed && !incompatible) {
            img_error("Cannot downgrade an image with zstd compression type and existing compressed clusters");
            return -ENOTSUP;
        }
        if (incompatible) {
            img_error("Cannot downgrade an image with incompatible features %#llx set", (unsigned long long)incompatible);
            return -ENOTSUP;
        }
    }
    return 0;
}

/* Upgrade first, then the bits, then the size, downgrade last (it loses what the others may need). */
static int amend(struct bdev *bdev, const struct amend_plan *plan, struct img_progress *progress)
{
    const struct qcow2_header *h = &qcow2_image_header(bdev)->header;
    uint32_t old_version = h->version;
    int rc = 0;
    if (plan->version == 3 && old_version < 3)
        rc = qcow2_image_set_version(bdev, 3, img_progress_fraction, progress);
    if (rc == 0 && plan->refcount_order >= 0) {
        struct qcow2_refcount_overflow overflow;
        rc = qcow2_image_set_refcount_order(bdev, (uint32_t)plan->refcount_order, &overflow);
        if (rc == -ERANGE) {
            img_error("Cannot decrease refcount entry width to %u bits: Cluster at offset %#llx has a refcount of %llu",
                      1u << plan->refcount_order, (unsigned long long)overflow.offset,
                      (unsigned long long)overflow.refcount);
            return rc;
        }
    }
    if (rc == 0 && plan->lazy_refcounts >= 0 &&
        !!(h->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) != plan->lazy_refcounts)
        rc = qcow2_image_set_lazy_refcounts(bdev, plan->lazy_refcounts);
    if (rc == 0 && plan->size && plan->size != bdev->size) {
        if (plan->size % 512) {
            img_error("The new size must be a multiple of 512");
            return -EINVAL;
        }
        rc = plan->size < bdev->size ? qcow2_image_shrink(bdev, plan->size) : qcow2_image_grow(bdev, plan->size);
        if (rc == 0)
            rc = qcow2_image_data_file_resize(bdev, plan->size);
    }
    if (rc == 0 && plan->version == 2 && old_version >= 3)
        rc = qcow2_image_set_version(bdev, 2, img_progress_fraction, progress);
    if (rc < 0)
        img_error("Error while amending options: %s", strerror(-rc));
    return rc;
}

int img_amend_main(int argc, char **argv)
{
    enum { OPTION_OBJECT = 256, OPTION_IMAGE_OPTS, OPTION_FORCE };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, OPTION_OBJECT},
        {"image-opts", no_argument, NULL, OPTION_IMAGE_OPTS},
        {"force", no_argument, NULL, OPTION_FORCE},
        {0},
    };
    struct img_options options = {0};
    const char *format = NULL;
    bool progress = false, quiet = false, have_options = false;
    enum bdev_cache_mode cache = BDEV_CACHE_WRITEBACK;
    int status = 1;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":ho:f:t:pq", long_options, NULL)) != -1;) {
        switch (c) {
        case 'h': amend_usage(); img_options_free(&options); return 0;
        case 'o':
            have_options = true;
            if (!option_list_valid(optarg)) {
                img_error("Invalid option list: %s", optarg);
                goto out;
            }
            if (img_options_add(&options, optarg) != 0)
                goto out;
            break;
        case 'f': format = optarg; break;
        case 't':
            if (bdev_cache_mode_parse(optarg, &cache) < 0) {
                img_error("Invalid cache option: %s", optarg);
                goto out;
            }
            break;
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case OPTION_FORCE: break; /* for encryption changes, which luna-img does not make */
        case OPTION_OBJECT: break;
        case OPTION_IMAGE_OPTS:
            img_error("--image-opts is not supported by luna-img");
            goto out;
        default: /* ':' or '?' */
            status = img_option_error(c, argv, optind);
            goto out;
        }
    }
    if (!have_options) {
        img_error("Must specify options (-o)");
        status = img_help_hint();
        goto out;
    }
    if (options.help) {
        options_help();
        status = 0;
        goto out;
    }
    if (optind != argc - 1) {
        img_error("Expecting one image file name");
        goto out;
    }
    const char *filename = argv[optind];
    if (format && strcmp(format, "raw") && strcmp(format, "qcow2")) {
        img_error("Could not open '%s': Unknown driver '%s'", filename, format);
        goto out;
    }
    struct bdev *bdev;
    if (img_open_image(filename, format, false, false, cache, &bdev) < 0)
        goto out;
    struct amend_plan plan;
    if (!qcow2_image_is(bdev)) {
        img_error("Format driver '%s' does not support option amendment", bdev->ops->name);
    } else if (options_check(&options) == 0 && plan_options(&options, bdev, &plan) == 0) {
        struct img_progress shown = {.enabled = progress && !quiet};
        img_progress_print(&shown, 0);
        if (amend(bdev, &plan, &shown) == 0) {
            img_progress_print(&shown, 100);
            if (shown.enabled)
                printf("\n");
            status = 0;
        }
    }
    bdev_close(bdev);
out:
    img_options_free(&options);
    return status;
}
