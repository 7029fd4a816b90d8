/*
 * img_map: `luna-img map`, as `qemu-img map` 7.2: where each range of the
 * guest disk comes from (which layer of the backing chain, data or zeroes,
 * at which offset of which file), in qemu-img's human table or its JSON
 * lines, with its merging of neighbouring ranges.  The statuses are
 * img_status's (QEMU's own bits); this file walks and prints them.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/img/img.h"
#include "block/img/img_status.h"

/* One range as qemu-img's MapEntry has it. */
struct map_entry {
    uint64_t start, length, offset;
    unsigned depth;
    bool data, zero, present, has_offset;
    const char *filename; /* with has_offset only */
};

static void map_usage(void)
{
    printf("usage: luna-img map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=OFFSET]\n"
           "        [--max-length=LEN] [--output=ofmt] [-U] filename\n\n"
           "Show where the image's data is: which layer of the backing chain, data or zeroes, at which\n"
           "offset of which file.\n"
           "  -f fmt              the image format (raw, qcow2, vmdk, vdi, vpc); probed when omitted\n"
           "  --start-offset=OFF  start at this guest offset\n"
           "  --max-length=LEN    describe at most this many bytes\n"
           "  --output=ofmt       human (default: data ranges with their file offsets) or json (every range)\n"
           "  -U                  force share: take no image lock\n");
}

/* The first layer of the chain that has [offset, ...) allocated or reading as zeroes, as qemu-img walks it. */
static int entry_at(struct img_chain *chain, uint64_t offset, uint64_t bytes, struct map_entry *entry)
{
    struct img_status status;
    for (size_t layer = 0;; layer++) {
        int rc = img_layer_status(chain, layer, offset, bytes, &status);
        if (rc < 0)
            return rc;
        if (status.length == 0)
            return -EIO; /* a layer shorter than the one above that did not say so */
        bytes = status.length;
        if (status.flags & (IMG_STATUS_DATA | IMG_STATUS_ZERO))
            break;
        if (layer + 1 >= chain->count) {
            status.flags = 0;
            break;
        }
    }
    bool has_offset = (status.flags & IMG_STATUS_OFFSET_VALID) != 0;
    *entry = (struct map_entry){
        .start = offset,
        .length = bytes,
        .offset = has_offset ? status.map : 0,
        .depth = status.depth,
        .data = (status.flags & IMG_STATUS_DATA) != 0,
        .zero = (status.flags & IMG_STATUS_ZERO) != 0,
        .present = (status.flags & IMG_STATUS_ALLOCATED) != 0,
        .has_offset = has_offset,
        .filename = has_offset ? status.file : NULL,
    };
    return 0;
}

static bool mergeable(const struct map_entry *current, const struct map_entry *next)
{
    if (current->length == 0)
        return false;
    if (current->zero != next->zero || current->data != next->data || current->depth != next->depth ||
        current->present != next->present || !current->filename != !next->filename ||
        current->has_offset != next->has_offset)
        return false;
    if (current->filename && strcmp(current->filename, next->filename))
        return false;
    if (current->has_offset && current->offset + current->length != next->offset)
        return false;
    return true;
}

/* Print entry; next (NULL for the last) is adjusted as qemu-img does in human mode. */
static int print_entry(bool json, const struct map_entry *entry, struct map_entry *next)
{
    if (!json) {
        if (entry->data && !entry->has_offset) {
            img_error("File contains external, encrypted or compressed clusters.");
            return -EINVAL;
        }
        if (entry->data && !entry->zero)
            printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", entry->start, entry->length,
                   entry->has_offset ? entry->offset : 0, entry->filename ? entry->filename : "");
        /* The table does not tell zeroes from holes: qemu-img merges them. */
        if (next && (!next->data || next->zero)) {
            next->data = false;
            next->zero = true;
        }
        return 0;
    }
    printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %u, \"present\": %s, \"zero\": %s,"
           " \"data\": %s",
           entry->start, entry->length, entry->depth, entry->present ? "true" : "false",
           entry->zero ? "true" : "false", entry->data ? "true" : "false");
    if (entry->has_offset)
        printf(", \"offset\": %" PRIu64, entry->offset);
    putchar('}');
    if (next)
        puts(",");
    return 0;
}

static int map_chain(struct img_chain *chain, bool json, uint64_t start, uint64_t max_length, bool max_given)
{
    if (json)
        putchar('[');
    else
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    uint64_t length = img_chain_top(chain)->size;
    if (max_given && start + max_length < length)
        length = start + max_length;
    struct map_entry current = {.start = start}, next;
    int rc = 0;
    while (current.start + current.length < length) {
        uint64_t offset = current.start + current.length;
        if ((rc = entry_at(chain, offset, length - offset, &next)) < 0) {
            img_error("Could not read file metadata: %s", strerror(-rc));
            return rc;
        }
        if (mergeable(&current, &next)) {
            current.length += next.length;
            continue;
        }
        if (current.length > 0 && (rc = print_entry(json, &current, &next)) < 0)
            return rc;
        current = next;
    }
    rc = print_entry(json, &current, NULL);
    if (json)
        puts("]");
    return rc;
}

/* qemu-img's cvtnum for --start-offset and --max-length. */
static int parse_number(const char *what, const char *text, uint64_t *out)
{
    int rc = img_parse_size(text, out);
    if (rc == 0 && *out > INT64_MAX)
        rc = -ERANGE;
    if (rc == -ERANGE) {
        img_error("Invalid %s specified. Must be between 0 and %" PRId64 ".", what, INT64_MAX);
        return 1;
    }
    if (rc < 0) {
        img_error("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", what);
        img_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return 1;
    }
    return 0;
}

int img_map_main(int argc, char **argv)
{
    enum { OPTION_OUTPUT = 256, OPTION_OBJECT, OPTION_IMAGE_OPTS, OPTION_START_OFFSET, OPTION_MAX_LENGTH };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"format", required_argument, NULL, 'f'},
        {"output", required_argument, NULL, OPTION_OUTPUT},
        {"object", required_argument, NULL, OPTION_OBJECT},
        {"image-opts", no_argument, NULL, OPTION_IMAGE_OPTS},
        {"start-offset", required_argument, NULL, OPTION_START_OFFSET},
        {"max-length", required_argument, NULL, OPTION_MAX_LENGTH},
        {"force-share", no_argument, NULL, 'U'},
        {0},
    };
    const char *format = NULL;
    bool json = false, force_share = false, image_opts = false, max_given = false;
    uint64_t start = 0, max_length = 0;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":f:hU", long_options, NULL)) != -1;) {
        switch (c) {
        case 'h': map_usage(); return 0;
        case 'f': format = optarg; break;
        case 'U': force_share = true; break;
        case OPTION_OUTPUT:
            if (img_parse_output(optarg, &json))
                return 1;
            break;
        case OPTION_OBJECT: break; /* secrets and the like: nothing luna-img reads needs them */
        case OPTION_IMAGE_OPTS: image_opts = true; break;
        case OPTION_START_OFFSET:
            if (parse_number("start offset", optarg, &start))
                return 1;
            break;
        case OPTION_MAX_LENGTH:
            if (parse_number("max length", optarg, &max_length))
                return 1;
            max_given = true;
            break;
        default: return img_option_error(c, argv, optind);
        }
    }
    if (optind != argc - 1) {
        img_error("Expecting one image file name");
        return img_help_hint();
    }
    struct img_chain chain;
    if (img_chain_open_spec(argv[optind], image_opts, format, force_share, BDEV_CACHE_WRITEBACK, NULL, &chain) < 0)
        return 1;
    int rc = map_chain(&chain, json, start, max_length, max_given);
    img_chain_close(&chain);
    return rc < 0 ? 1 : 0;
}
