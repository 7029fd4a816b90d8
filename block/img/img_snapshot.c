/*
 * luna-img snapshot: list, create, apply and delete qcow2 internal
 * snapshots with qemu-img 7.2's syntax, output, messages and exit codes.
 * The work is the qcow2 driver's (qcow2_image.h).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "block/img/img.h"
#include "block/qcow2/qcow2_image.h"

/* QEMU keeps names in 256-byte buffers: longer ones are cut, as qemu-img does. */
#define MAX_NAME 255

enum snapshot_action { ACTION_NONE, ACTION_LIST, ACTION_APPLY, ACTION_CREATE, ACTION_DELETE };

static void snapshot_usage(void)
{
    printf("usage: luna-img snapshot [--object objectdef] [--image-opts] [-U] [-q] "
           "[-l | -a snapshot | -c snapshot | -d snapshot] filename\n\n"
           "List, create, apply or delete the internal snapshots of a qcow2 image.\n"
           "  -l              list the snapshots\n"
           "  -c snapshot     create a snapshot of the image as it is now, named snapshot\n"
           "  -a snapshot     apply a snapshot (found by id, then by name): the image becomes what it holds\n"
           "  -d snapshot     delete a snapshot (found by id, then by name)\n"
           "  -q              quiet\n"
           "  -U              force share: list an image another program has open (read-only)\n");
}

/* qemu-img's "Could not create snapshot 'x': -95 (Operation not supported)". */
static void errno_error(const char *verb, const char *name, int rc)
{
    img_error("Could not %s snapshot '%s': %d (%s)", verb, name, rc, strerror(-rc));
}

static int run(enum snapshot_action action, const char *name, const char *filename, bool force_share)
{
    if (force_share && action != ACTION_LIST) {
        img_error("Could not open '%s': force-share=on can only be used with read-only images", filename);
        return 1;
    }
    struct bdev *bdev;
    if (img_open_image(filename, NULL, action == ACTION_LIST, force_share, BDEV_CACHE_WRITEBACK, &bdev) < 0)
        return 1;
    bool qcow2 = qcow2_image_is(bdev);
    int status = 0, rc = 0;
    switch (action) {
    case ACTION_NONE:
        break;
    case ACTION_LIST: {
        if (!qcow2)
            break; /* no snapshots to show */
        struct qcow2_snapshot_table table;
        rc = qcow2_image_snapshot_list(bdev, &table);
        if (rc < 0) {
            img_error("Could not list the snapshots of '%s': %s", filename, strerror(-rc));
            status = 1;
        } else if (table.count) {
            img_print_snapshots(table.entries, table.count);
        }
        qcow2_snapshot_table_clear(&table);
        break;
    }
    case ACTION_CREATE: {
        char cut[MAX_NAME + 1];
        snprintf(cut, sizeof(cut), "%s", name);
        struct timeval now;
        gettimeofday(&now, NULL);
        rc = qcow2 ? qcow2_image_snapshot_create(bdev, cut, (uint32_t)now.tv_sec, (uint32_t)now.tv_usec * 1000)
                   : -ENOTSUP;
        if (rc < 0) {
            errno_error("create", name, rc);
            status = 1;
        }
        break;
    }
    case ACTION_APPLY:
        if (!qcow2) {
            img_error("Could not apply snapshot '%s': Block driver does not support snapshots", name);
            status = 1;
        } else if ((rc = qcow2_image_snapshot_apply(bdev, name)) == -ENOENT) {
            img_error("Could not apply snapshot '%s': Failed to load snapshot: %s", name, strerror(ENOENT));
            status = 1;
        } else if (rc < 0) {
            img_error("Could not apply snapshot '%s': Failed to load snapshot: %s", name, strerror(-rc));
            status = 1;
        }
        break;
    case ACTION_DELETE:
        rc = qcow2 ? qcow2_image_snapshot_delete(bdev, name) : -ENOENT;
        if (rc == -ENOENT) {
            img_error("Could not delete snapshot '%s': snapshot not found", name);
            status = 1;
        } else if (rc < 0) {
            img_error("Could not delete snapshot '%s': %s", name, strerror(-rc));
            status = 1;
        }
        break;
    }
    bdev_close(bdev);
    return status;
}

int img_snapshot_main(int argc, char **argv)
{
    enum { OPTION_OBJECT = 256, OPTION_IMAGE_OPTS };
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, OPTION_OBJECT},
        {"image-opts", no_argument, NULL, OPTION_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {0},
    };
    enum snapshot_action action = ACTION_NONE;
    const char *name = NULL;
    bool force_share = false;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":la:c:d:hqU", long_options, NULL)) != -1;) {
        enum snapshot_action chosen = ACTION_NONE;
        switch (c) {
        case 'h': snapshot_usage(); return 0;
        case 'l': chosen = ACTION_LIST; break;
        case 'a': chosen = ACTION_APPLY; break;
        case 'c': chosen = ACTION_CREATE; break;
        case 'd': chosen = ACTION_DELETE; break;
        case 'q': break; /* snapshot prints nothing but the list and errors */
        case 'U': force_share = true; break;
        case OPTION_OBJECT: break; /* secrets and the like: no format luna-img reads needs one */
        case OPTION_IMAGE_OPTS:
            img_error("--image-opts is not supported by luna-img");
            return 1;
        default: /* ':' or '?' */
            return img_option_error(c, argv, optind);
        }
        if (chosen != ACTION_NONE) {
            if (action != ACTION_NONE) {
                img_error("Cannot mix '-l', '-a', '-c', '-d'");
                return img_help_hint();
            }
            action = chosen;
            name = chosen == ACTION_LIST ? NULL : optarg;
        }
    }
    if (optind != argc - 1) {
        img_error("Expecting one image file name");
        return img_help_hint();
    }
    return run(action, name, argv[optind], force_share);
}
