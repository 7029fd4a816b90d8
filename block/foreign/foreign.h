/*
 * foreign: the formats of other hypervisors that luna reads (never
 * writes), so their disks convert to qcow2 or raw in one command:
 *  - vmdk: VMware's hosted sparse extent, as monolithicSparse and
 *    streamOptimized (compressed grains) images;
 *  - vdi: VirtualBox, dynamic and static;
 *  - vpc: Virtual PC / Hyper-V VHD, dynamic and fixed.
 * Each is a table-mapped image over one file (mapped_image.h does the bdev
 * side); the entries here are what bdev_open and the format probe call.
 */
#ifndef LUNA_BLOCK_FOREIGN_FOREIGN_H
#define LUNA_BLOCK_FOREIGN_FOREIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/bdev.h"

/* bdev_open's entries (bdev->filename set): read-only bdevs.  0 or -errno and a message naming the file. */
int vmdk_open(struct bdev *bdev, const struct bdev_options *options, char **error_message);
int vdi_open(struct bdev *bdev, const struct bdev_options *options, char **error_message);
int vpc_open(struct bdev *bdev, const struct bdev_options *options, char **error_message);

/*
 * Whether a file starting with these bytes (the first 512 or fewer) is of
 * the format, by the same rules as qemu-img's probe.  A fixed VHD has its
 * only footer at the end, so like qemu-img the probe calls it raw: open it
 * with format vpc.
 */
bool vmdk_probe(const uint8_t *start, size_t length);
bool vdi_probe(const uint8_t *start, size_t length);
bool vpc_probe(const uint8_t *start, size_t length);

#endif
