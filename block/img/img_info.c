/*
 * img_info: `luna-img info`, as `qemu-img info` for raw and qcow2: the same
 * human layout, and JSON with qemu-img 7.2's field names, nesting and order.
 * qcow2 images are read through qcow2_format's decoders, not opened as a
 * bdev, so dirty, corrupt or backing-less images can still be described.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "block/bdev.h"
#include "block/img/img.h"
#include "block/qcow2/qcow2.h"
#include "block/image_probe.h"
#include "block/iscsi_client.h"
#include "block/nbd_client.h"
#include "block/qcow2/qcow2_format.h"
#include "block/qcow2/qcow2_snapshots.h"
#include "common/error_message.h"

struct image_info {
    const char *filename;
    const char *format;
    uint64_t virtual_size;
    uint64_t actual_size;
    uint64_t cluster_size; /* 0: none to show */
    bool remote;           /* an nbd:// URL: no disk size, no dirty flag */
    bool qcow2;
    struct qcow2_image_header image;
    struct qcow2_snapshot_table snapshots;
    char *full_backing;   /* the backing path as opened, relative to the image's directory */
};

/* qemu's size_to_str: three significant digits, switching unit at 1000. */
static void size_text(uint64_t value, char *out, size_t length)
{
    static const char *const suffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    int exponent;
    frexp((double)value / (1000.0 / 1024.0), &exponent);
    int i = (exponent - 1) / 10;
    if (i < 0)
        i = 0;
    snprintf(out, length, "%0.3g %sB", (double)value / (double)(1ull << (i * 10)), suffixes[i]);
}

static int read_snapshots(int fd, struct image_info *info, uint64_t file_size, char **message)
{
    struct qcow2_snapshot_table *table = &info->snapshots;
    int rc = qcow2_snapshot_table_read(fd, &info->image.header, file_size, table);
    if (rc == -EINVAL)
        return error_message_set(message, rc, "snapshot table entry %u lies outside the file or is truncated",
                                 table->bad_entry);
    if (rc == -EFBIG)
        return error_message_set(message, -EINVAL, "snapshot %u: extra data too large", table->bad_entry);
    return rc;
}

static int read_qcow2(int fd, struct image_info *info, uint64_t file_size, char **message)
{
    char *reason = NULL;
    int rc = qcow2_image_header_read(qcow2_read_fd, &fd, file_size, &info->image, &reason);
    if (rc == 0)
        rc = read_snapshots(fd, info, file_size, &reason);
    if (rc < 0) {
        error_message_set(message, 0, "Could not open '%s': %s", info->filename,
                          reason ? reason : strerror(-rc));
        free(reason);
        return rc;
    }
    info->qcow2 = true;
    info->virtual_size = info->image.header.size;
    info->cluster_size = qcow2_cluster_size(&info->image.header);
    if (info->image.backing_file && !(info->full_backing = qcow2_backing_path(info->filename, info->image.backing_file)))
        return -ENOMEM;
    return 0;
}

/* Any format but qcow2 (raw, and the read-only foreign ones): what the bdev says. */
static int read_through_bdev(struct image_info *info, enum bdev_format format, char **message)
{
    struct bdev_options options;
    bdev_options_init(&options);
    options.path = info->filename;
    options.format = format;
    options.readonly = true;
    struct bdev *bdev = NULL;
    char *reason = NULL;
    int rc = bdev_open(&options, &bdev, &reason);
    if (rc < 0) {
        error_message_set(message, 0, "Could not open '%s': %s", info->filename,
                          img_open_reason(info->filename, rc, reason));
        free(reason);
        return rc;
    }
    info->virtual_size = bdev->size;
    /* qemu-img shows the grain or block size of the foreign formats (none for a fixed VHD). */
    if (format != BDEV_FORMAT_RAW && format != BDEV_FORMAT_AUTO)
        info->cluster_size = bdev->limits.optimal_io_size;
    bdev_close(bdev);
    return 0;
}

/* format: a name img_input_format_known accepts, or NULL to probe. */
static int image_info_read(struct image_info *info, const char *filename, const char *format, char **message)
{
    memset(info, 0, sizeof(*info));
    info->filename = filename;
    if (nbd_client_is_url(filename) || iscsi_client_is_url(filename)) {
        /* A disk on a server: its data as raw, its disk usage unknown (as qemu-img shows it). */
        info->remote = true;
        info->format = "raw";
        return read_through_bdev(info, BDEV_FORMAT_RAW, message);
    }
    int fd = open(filename, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return error_message_set(message, -errno, "Could not open '%s': Could not open '%s': %s", filename,
                                 filename, strerror(errno));
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? -errno : 0;
    if (rc == 0) {
        info->actual_size = (uint64_t)st.st_blocks * 512;
        enum bdev_format parsed = BDEV_FORMAT_RAW;
        if (!format)
            parsed = image_probe(filename);
        else if (bdev_format_parse(format, &parsed) < 0)
            parsed = BDEV_FORMAT_RAW;
        if (parsed == BDEV_FORMAT_AUTO)
            parsed = BDEV_FORMAT_RAW;
        info->format = bdev_format_name(parsed);
        rc = parsed == BDEV_FORMAT_QCOW2 ? read_qcow2(fd, info, (uint64_t)st.st_size, message)
                                         : read_through_bdev(info, parsed, message);
    } else {
        error_message_set(message, rc, "Could not stat '%s': %s", filename, strerror(-rc));
    }
    close(fd);
    return rc;
}

static void image_info_clear(struct image_info *info)
{
    qcow2_snapshot_table_clear(&info->snapshots);
    free(info->full_backing);
    qcow2_image_header_clear(&info->image);
}

/* ---- JSON ----------------------------------------------------------------- */

static json_object *snapshot_json(const struct qcow2_snapshot *s)
{
    json_object *o = json_object_new_object();
    if (s->icount != UINT64_MAX)
        json_object_object_add(o, "icount", json_object_new_uint64(s->icount));
    json_object_object_add(o, "vm-clock-nsec", json_object_new_int64((int64_t)(s->vm_clock_nsec % 1000000000)));
    json_object_object_add(o, "name", json_object_new_string(s->name));
    json_object_object_add(o, "date-sec", json_object_new_int64(s->date_sec));
    json_object_object_add(o, "date-nsec", json_object_new_int64(s->date_nsec));
    json_object_object_add(o, "vm-clock-sec", json_object_new_int64((int64_t)(s->vm_clock_nsec / 1000000000)));
    json_object_object_add(o, "id", json_object_new_string(s->id));
    json_object_object_add(o, "vm-state-size", json_object_new_uint64(s->vm_state_size));
    return o;
}

static const char *compression_name(uint8_t type) { return type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib"; }

/* Keys in the order qemu-img 7.2 prints them. */
static json_object *info_json(const struct image_info *info)
{
    const struct qcow2_header *h = &info->image.header;
    json_object *o = json_object_new_object();
    if (info->snapshots.count) {
        json_object *list = json_object_new_array();
        for (uint32_t i = 0; i < info->snapshots.count; i++)
            json_object_array_add(list, snapshot_json(&info->snapshots.entries[i]));
        json_object_object_add(o, "snapshots", list);
    }
    if (info->image.backing_format)
        json_object_object_add(o, "backing-filename-format", json_object_new_string(info->image.backing_format));
    json_object_object_add(o, "virtual-size", json_object_new_uint64(info->virtual_size));
    json_object_object_add(o, "filename", json_object_new_string(info->filename));
    if (info->cluster_size)
        json_object_object_add(o, "cluster-size", json_object_new_uint64(info->cluster_size));
    json_object_object_add(o, "format", json_object_new_string(info->format));
    if (!info->remote)
        json_object_object_add(o, "actual-size", json_object_new_uint64(info->actual_size));
    if (info->qcow2) {
        json_object *data = json_object_new_object();
        json_object_object_add(data, "compat", json_object_new_string(h->version >= 3 ? "1.1" : "0.10"));
        json_object_object_add(data, "compression-type", json_object_new_string(compression_name(h->compression_type)));
        if (h->version >= 3)
            json_object_object_add(data, "lazy-refcounts",
                                   json_object_new_boolean(h->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS));
        json_object_object_add(data, "refcount-bits", json_object_new_uint64(1ull << h->refcount_order));
        if (info->image.data_file) {
            json_object_object_add(data, "data-file", json_object_new_string(info->image.data_file));
            json_object_object_add(data, "data-file-raw",
                                   json_object_new_boolean(h->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW));
        }
        if (h->version >= 3) {
            json_object_object_add(data, "corrupt",
                                   json_object_new_boolean(h->incompatible_features & QCOW2_INCOMPAT_CORRUPT));
            json_object_object_add(data, "extended-l2",
                                   json_object_new_boolean(h->incompatible_features & QCOW2_INCOMPAT_EXTENDED_L2));
        }
        json_object *specific = json_object_new_object();
        json_object_object_add(specific, "type", json_object_new_string("qcow2"));
        json_object_object_add(specific, "data", data);
        json_object_object_add(o, "format-specific", specific);
    }
    if (info->image.backing_file) {
        json_object_object_add(o, "full-backing-filename", json_object_new_string(info->full_backing));
        json_object_object_add(o, "backing-filename", json_object_new_string(info->image.backing_file));
    }
    if (!info->remote)
        json_object_object_add(o, "dirty-flag",
                               json_object_new_boolean(h->incompatible_features & QCOW2_INCOMPAT_DIRTY));
    return o;
}

/* QEMU's pretty printer: four-space indents, "key": value, one member per line. */
static void print_json(const json_object *o, int depth)
{
    enum json_type type = json_object_get_type(o);
    if (type == json_type_object) {
        printf("{\n");
        size_t i = 0, count = (size_t)json_object_object_length(o);
        json_object_object_foreach((json_object *)o, key, value) {
            printf("%*s\"%s\": ", (depth + 1) * 4, "", key);
            print_json(value, depth + 1);
            printf("%s\n", ++i < count ? "," : "");
        }
        printf("%*s}", depth * 4, "");
    } else if (type == json_type_array) {
        printf("[\n");
        size_t count = json_object_array_length(o);
        for (size_t i = 0; i < count; i++) {
            printf("%*s", (depth + 1) * 4, "");
            print_json(json_object_array_get_idx(o, i), depth + 1);
            printf("%s\n", i + 1 < count ? "," : "");
        }
        printf("%*s]", depth * 4, "");
    } else {
        printf("%s", json_object_to_json_string_ext((json_object *)o, JSON_C_TO_STRING_PLAIN |
                                                                          JSON_C_TO_STRING_NOSLASHESCAPE));
    }
}

/* ---- human ---------------------------------------------------------------- */

void img_print_snapshots(const struct qcow2_snapshot *entries, uint32_t count)
{
    printf("Snapshot list:\n");
    printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
    for (uint32_t i = 0; i < count; i++) {
        const struct qcow2_snapshot *s = &entries[i];
        char date[128] = "", clock[128], size[32], icount[32] = "";
        time_t when = s->date_sec;
        struct tm tm;
        localtime_r(&when, &tm);
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
        uint64_t secs = s->vm_clock_nsec / 1000000000;
        snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", (int)(secs / 3600), (int)((secs / 60) % 60),
                 (int)(secs % 60), (int)((s->vm_clock_nsec / 1000000) % 1000));
        size_text(s->vm_state_size, size, sizeof(size));
        if (s->icount != UINT64_MAX)
            snprintf(icount, sizeof(icount), "%" PRIu64, s->icount);
        printf("%-9s %-16s %8s%20s%13s%11s\n", s->id, s->name, size, date, clock, icount);
    }
}

static void print_human(const struct image_info *info)
{
    const struct qcow2_header *h = &info->image.header;
    char virtual_size[32], disk_size[32];
    size_text(info->virtual_size, virtual_size, sizeof(virtual_size));
    if (info->remote)
        snprintf(disk_size, sizeof(disk_size), "unavailable");
    else
        size_text(info->actual_size, disk_size, sizeof(disk_size));
    printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRIu64 " bytes)\ndisk size: %s\n", info->filename,
           info->format, virtual_size, info->virtual_size, disk_size);
    if (info->cluster_size)
        printf("cluster_size: %" PRIu64 "\n", info->cluster_size);
    if (!info->qcow2)
        return;
    if (h->incompatible_features & QCOW2_INCOMPAT_DIRTY)
        printf("cleanly shut down: no\n");
    if (info->image.backing_file) {
        printf("backing file: %s", info->image.backing_file);
        if (strcmp(info->image.backing_file, info->full_backing))
            printf(" (actual path: %s)", info->full_backing);
        printf("\n");
        if (info->image.backing_format)
            printf("backing file format: %s\n", info->image.backing_format);
    }
    if (info->snapshots.count)
        img_print_snapshots(info->snapshots.entries, info->snapshots.count);
    printf("Format specific information:\n    compat: %s\n    compression type: %s\n",
           h->version >= 3 ? "1.1" : "0.10", compression_name(h->compression_type));
    if (h->version >= 3)
        printf("    lazy refcounts: %s\n", h->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS ? "true" : "false");
    printf("    refcount bits: %u\n", 1u << h->refcount_order);
    if (info->image.data_file)
        printf("    data file: %s\n    data file raw: %s\n", info->image.data_file,
               h->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW ? "true" : "false");
    if (h->version >= 3)
        printf("    corrupt: %s\n    extended l2: %s\n", h->incompatible_features & QCOW2_INCOMPAT_CORRUPT ? "true" : "false",
               h->incompatible_features & QCOW2_INCOMPAT_EXTENDED_L2 ? "true" : "false");
}

/* ---- the verb ------------------------------------------------------------- */

static void info_usage(void)
{
    printf("usage: luna-img info [-f fmt] [--output=human|json] [--backing-chain] [-U] filename\n\n"
           "Describe a disk image (raw, qcow2, vmdk, vdi or vpc).\n"
           "  -f fmt           the image format; probed when omitted (by magic, else raw)\n"
           "  --output=ofmt    human (default) or json, as qemu-img prints them\n"
           "  --backing-chain  also describe every backing file, base last\n"
           "  -U               accepted for compatibility (luna-img takes no image locks)\n");
}

#define MAX_CHAIN 64

int img_info_main(int argc, char **argv)
{
    enum { OPTION_OUTPUT = 256, OPTION_CHAIN };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"output", required_argument, NULL, OPTION_OUTPUT},
        {"backing-chain", no_argument, NULL, OPTION_CHAIN},
        {"force-share", no_argument, NULL, 'U'},
        {0},
    };
    const char *format = NULL;
    bool json = false, chain = false;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":hf:U", long_options, NULL)) != -1;) {
        switch (c) {
        case 'h': info_usage(); return 0;
        case 'f': format = optarg; break;
        case 'U': break;
        case OPTION_OUTPUT:
            if (img_parse_output(optarg, &json))
                return 1;
            break;
        case OPTION_CHAIN: chain = true; break;
        default: /* ':' or '?' */
            return img_option_error(c, argv, optind);
        }
    }
    const char *filename;
    if (img_one_image(format, argc, argv, optind, &filename) != 0)
        return 1;

    struct image_info infos[MAX_CHAIN];
    size_t count = 0;
    int status = 0;
    while (filename) {
        char *message = NULL;
        if (count == MAX_CHAIN) {
            img_error("Backing chain of '%s' is longer than %d images (a loop?)", argv[optind], MAX_CHAIN);
            status = 1;
            break;
        }
        if (image_info_read(&infos[count], filename, format, &message) < 0) {
            img_error("%s", message ? message : "Could not open the image");
            free(message);
            image_info_clear(&infos[count]);
            status = 1;
            break;
        }
        const struct image_info *info = &infos[count++];
        filename = chain && info->image.backing_file ? info->full_backing : NULL;
        format = info->image.backing_format; /* NULL: probe */
    }
    if (status == 0) {
        json_object *list = json ? json_object_new_array() : NULL;
        for (size_t i = 0; i < count; i++) {
            if (json) {
                json_object_array_add(list, info_json(&infos[i]));
            } else {
                if (i)
                    printf("\n");
                print_human(&infos[i]);
            }
        }
        if (json) {
            print_json(chain ? list : json_object_array_get_idx(list, 0), 0);
            printf("\n");
            json_object_put(list);
        }
    }
    for (size_t i = 0; i < count; i++)
        image_info_clear(&infos[i]);
    return status;
}
