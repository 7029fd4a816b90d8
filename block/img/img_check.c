/*
 * img_check: `luna-img check`, as `qemu-img check` 7.2: the same flags,
 * messages (the per-cluster lines on stderr), summary, JSON fields and exit
 * codes (0 clean, 1 check not completed, 2 corruptions, 3 leaks only, 63
 * format without checks).  The checking and repairing is qcow2_check().
 *
 * Without -U the image is locked as lunad and QEMU lock it (qcow2_lock.h):
 * a check reads and refuses writers, a repair also writes, so an image
 * being served read-write is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/img/img.h"
#include "block/qcow2/qcow2.h"
#include "block/qcow2/qcow2_check.h"
#include "block/qcow2/qcow2_lock.h"

static void check_usage(void)
{
    printf("usage: luna-img check [-q] [-f fmt] [--output=human|json] [-r leaks|all] [-U] filename\n\n"
           "Check a disk image for consistency (qcow2), and repair it with -r.\n"
           "  -f fmt           the image format; probed when omitted (qcow2 magic, else raw)\n"
           "  --output=ofmt    human (default) or json, as qemu-img prints them\n"
           "  -r leaks         repair leaked clusters (refcounts too high)\n"
           "  -r all           also repair refcounts too low and COPIED flags (may rebuild refcounts)\n"
           "  -U               force share: take no image lock (read-only checks only)\n"
           "  -q               quiet\n"
           "Exit codes: 0 no errors, 1 check not completed, 2 corruptions, 3 leaked clusters only,\n"
           "63 the format does not support checks.\n");
}

static void print_line(void *opaque, const char *line)
{
    (void)opaque;
    fprintf(stderr, "%s\n", line);
}

/* Lock as lunad and QEMU do (qcow2_lock.h), with qemu-img's messages when refused. */
static int lock_image(int fd, const char *filename, bool write)
{
    struct qcow2_lock_failure failure;
    int rc = qcow2_lock(fd, write, &failure);
    if (rc == 0)
        return 0;
    if (rc != -EBUSY) {
        img_error("Could not open '%s': cannot lock the image: %s", filename, strerror(-rc));
    } else if (failure.kind == QCOW2_LOCK_BYTE_TAKEN) {
        img_error("Could not open '%s': Failed to lock byte %d", filename, failure.byte);
    } else {
        img_error("Could not open '%s': Failed to get %s\"%s\" lock", filename,
                  failure.kind == QCOW2_LOCK_HELD ? "shared " : "", failure.permission);
        fprintf(stderr, "Is another process using the image [%s]?\n", filename);
    }
    return -1;
}

/* Keys in the order qemu-img 7.2 prints them (its QDict's order); zero counts are left out. */
static void print_json(const char *filename, const struct qcow2_check_result *r)
{
    printf("{\n");
    if (r->image_end_offset)
        printf("    \"image-end-offset\": %" PRId64 ",\n", r->image_end_offset);
    if (r->compressed_clusters)
        printf("    \"compressed-clusters\": %" PRId64 ",\n", r->compressed_clusters);
    if (r->total_clusters)
        printf("    \"total-clusters\": %" PRId64 ",\n", r->total_clusters);
    if (r->corruptions)
        printf("    \"corruptions\": %" PRId64 ",\n", r->corruptions);
    if (r->corruptions_fixed)
        printf("    \"corruptions-fixed\": %" PRId64 ",\n", r->corruptions_fixed);
    printf("    \"check-errors\": %" PRId64 ",\n", r->check_errors);
    if (r->leaks)
        printf("    \"leaks\": %" PRId64 ",\n", r->leaks);
    if (r->leaks_fixed)
        printf("    \"leaks-fixed\": %" PRId64 ",\n", r->leaks_fixed);
    if (r->allocated_clusters)
        printf("    \"allocated-clusters\": %" PRId64 ",\n", r->allocated_clusters);
    json_object *name = json_object_new_string(filename);
    printf("    \"filename\": %s,\n",
           json_object_to_json_string_ext(name, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(name);
    printf("    \"format\": \"qcow2\"");
    if (r->fragmented_clusters)
        printf(",\n    \"fragmented-clusters\": %" PRId64, r->fragmented_clusters);
    printf("\n}\n");
}

static void print_human(const struct qcow2_check_result *r)
{
    if (!r->corruptions && !r->leaks && !r->check_errors) {
        printf("No errors were found on the image.\n");
    } else {
        if (r->corruptions)
            printf("\n%" PRId64 " errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image may corrupt it.\n",
                   r->corruptions);
        if (r->leaks)
            printf("\n%" PRId64 " leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n",
                   r->leaks);
        if (r->check_errors)
            printf("\n%" PRId64 " internal errors have occurred during the check.\n", r->check_errors);
    }
    if (r->total_clusters && r->allocated_clusters)
        printf("%" PRId64 "/%" PRId64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
               r->allocated_clusters, r->total_clusters, r->allocated_clusters * 100.0 / r->total_clusters,
               r->fragmented_clusters * 100.0 / r->allocated_clusters,
               r->compressed_clusters * 100.0 / r->allocated_clusters);
    if (r->image_end_offset)
        printf("Image end offset: %" PRId64 "\n", r->image_end_offset);
}

static int run_check(int fd, const char *filename, enum qcow2_check_fix fix, struct qcow2_check_result *result)
{
    char *message = NULL;
    int rc = qcow2_check_fd(fd, filename, fix, result, print_line, NULL, &message);
    if (rc < 0 && message)
        img_error("Could not open '%s': %s", filename, message);
    else if (rc < 0)
        img_error("Check failed: %s", strerror(-rc));
    free(message);
    return rc;
}

int img_check_main(int argc, char **argv)
{
    enum { OPTION_OUTPUT = 256 };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"output", required_argument, NULL, OPTION_OUTPUT},
        {"force-share", no_argument, NULL, 'U'},
        {0},
    };
    const char *format = NULL;
    bool json = false, quiet = false, force_share = false;
    enum qcow2_check_fix fix = QCOW2_CHECK_FIX_NONE;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":hf:r:T:qU", long_options, NULL)) != -1;) {
        switch (c) {
        case 'h': check_usage(); return 0;
        case 'f': format = optarg; break;
        case 'q': quiet = true; break;
        case 'U': force_share = true; break;
        case 'T': break; /* cache mode: luna-img uses the page cache */
        case 'r':
            if (!strcmp(optarg, "leaks"))
                fix = QCOW2_CHECK_FIX_LEAKS;
            else if (!strcmp(optarg, "all"))
                fix = QCOW2_CHECK_FIX_ALL;
            else {
                img_error("Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
                return 1;
            }
            break;
        case OPTION_OUTPUT:
            if (img_parse_output(optarg, &json))
                return 1;
            break;
        default: /* ':' or '?' */
            return img_option_error(c, argv, optind);
        }
    }
    const char *filename;
    if (img_one_image(format, argc, argv, optind, &filename) != 0)
        return 1;
    int fd = open(filename, (fix ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        img_error("Could not open '%s': Could not open '%s': %s", filename, filename, strerror(errno));
        return 1;
    }
    if (force_share && fix) {
        img_error("Could not open '%s': force-share=on can only be used with read-only images", filename);
        close(fd);
        return 1;
    }
    if (!force_share && lock_image(fd, filename, fix != QCOW2_CHECK_FIX_NONE) < 0) {
        close(fd);
        return 1;
    }
    if (!format)
        format = qcow2_probe(filename) ? "qcow2" : "raw";
    if (strcmp(format, "qcow2")) {
        img_error("This image format does not support checks");
        close(fd);
        return 63;
    }

    struct qcow2_check_result result;
    int rc = run_check(fd, filename, fix, &result);
    if (rc == 0 && (result.corruptions_fixed || result.leaks_fixed)) {
        int64_t leaks_fixed = result.leaks_fixed, corruptions_fixed = result.corruptions_fixed;
        if (!json && !quiet)
            printf("The following inconsistencies were found and repaired:\n\n"
                   "    %" PRId64 " leaked clusters\n"
                   "    %" PRId64 " corruptions\n\n"
                   "Double checking the fixed image now...\n",
                   leaks_fixed, corruptions_fixed);
        rc = run_check(fd, filename, QCOW2_CHECK_FIX_NONE, &result);
        result.leaks_fixed = leaks_fixed;
        result.corruptions_fixed = corruptions_fixed;
    }
    close(fd);
    if (rc < 0)
        return 1;
    if (!quiet) {
        if (json)
            print_json(filename, &result);
        else
            print_human(&result);
    }
    if (result.check_errors) {
        img_error("Check failed");
        return 1;
    }
    return result.corruptions ? 2 : result.leaks ? 3 : 0;
}
