/*
 * luna-img: the image tool, with qemu-img's verbs, flags, messages and exit
 * codes so scripts written for qemu-img work unchanged.  This file only
 * dispatches; each verb lives in its own img_VERB.c.
 */
#include <stdio.h>
#include <string.h>

#include "block/img/img.h"
#include "block/threadpool.h"

struct verb {
    const char *name;
    const char *synopsis;
    int (*main)(int argc, char **argv);
};

static const struct verb verbs[] = {
    {"amend", "amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename",
     img_amend_main},
    {"check", "check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-U] filename", img_check_main},
    {"commit", "commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] "
               "[-p] filename",
     img_commit_main},
    {"convert", "convert [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-l snapshot_param] "
                "[-B backing_file [-F backing_fmt]] [-o options] [-S sparse_size] [-m num_coroutines] [-W] [-U] "
                "filename [filename2 [...]] output_filename",
     img_convert_main},
    {"compare", "compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] "
                "filename1 filename2",
     img_compare_main},
    {"create", "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]",
     img_create_main},
    {"info", "info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename", img_info_main},
    {"map", "map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] "
            "[--output=ofmt] [-U] filename",
     img_map_main},
    {"measure", "measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] "
                "[--image-opts] [-f fmt] [-l snapshot_param] filename]",
     img_measure_main},
    {"rebase", "rebase [--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] "
               "-b backing_file [-F backing_fmt] filename",
     img_rebase_main},
    {"resize", "resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] [--shrink] "
               "filename [+ | -]size",
     img_resize_main},
    {"snapshot", "snapshot [--object objectdef] [--image-opts] [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] "
                 "filename",
     img_snapshot_main},
};

static void usage(void)
{
    printf("luna-img version %s\n"
           "usage: luna-img [standard options] command [command options]\n"
           "luna disk image utility (qemu-img compatible)\n\n"
           "    '-h', '--help'       display this help and exit\n"
           "    '-V', '--version'    output version information and exit\n\n"
           "Command syntax:\n",
           LUNA_VERSION);
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        printf("  %s\n", verbs[i].synopsis);
    printf("\nCommand parameters:\n"
           "  'filename' is a disk image filename\n"
           "  'fmt' is the disk image format (raw, qcow2; vmdk, vdi, vpc read only); guessed when omitted\n"
           "  'size' is the disk image size in bytes; optional suffixes k or K (kilobyte,\n"
           "    1024), M (megabyte), G (gigabyte), T (terabyte), P (petabyte) and E (exabyte)\n"
           "  'options' is a comma separated list of format specific options in a\n"
           "    name=value format; use -o help for an overview of the options supported\n"
           "  'ofmt' is 'human' or 'json'\n"
           "  'cache' is the cache mode: writeback, writethrough, none, directsync or unsafe\n"
           "  'sparse_size' is the number of consecutive zero bytes (default 4k) that convert\n"
           "    does not write (0 writes everything)\n"
           "  'num_coroutines' is the number of requests convert keeps in flight (1 to 16)\n"
           "  '-W' lets convert write out of order\n"
           "  '-c' makes convert compress the output's clusters (qcow2)\n"
           "  '-n' makes convert write into an existing output without creating it\n"
           "  '-u' creates the image without opening the backing file\n"
           "  '-U' takes no image lock (force share; info: luna-img takes none anyway)\n"
           "  '-r' repairs what check finds: 'leaks' leaked clusters, 'all' every fixable error\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        img_error("Not enough arguments");
        img_help_hint();
        return 1;
    }
    const char *first = argv[1];
    if (!strcmp(first, "-h") || !strcmp(first, "--help")) {
        usage();
        return 0;
    }
    if (!strcmp(first, "-V") || !strcmp(first, "--version")) {
        printf("luna-img version %s\n", LUNA_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (!strcmp(first, verbs[i].name)) {
            int status = verbs[i].main(argc - 1, argv + 1);
            threadpool_shutdown(); /* bdev_close hands descriptors to the pool */
            return status;
        }
    img_error("Command not found: %s", first);
    img_help_hint();
    return 1;
}
