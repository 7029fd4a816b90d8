/*
 * qcow2: the bdev driver for QEMU's qcow2 image format (v2 and v3), as
 * block/ exposes it to bdev_open.  The image format itself is in
 * qcow2_format.h; the driver's internals in qcow2_internal.h.
 */
#ifndef LUNA_BLOCK_QCOW2_H
#define LUNA_BLOCK_QCOW2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/bdev.h"

/* bdev_open's entry for BDEV_FORMAT_QCOW2 (bdev->filename set).  0 or -errno and a message. */
int qcow2_open(struct bdev *bdev, const struct bdev_options *options, char **error_message);

/* True when the file at path starts with the qcow2 magic. */
bool qcow2_probe(const char *path);

/* True when a file starting with these bytes is a qcow2 image (for image_probe). */
bool qcow2_probe_bytes(const uint8_t *start, size_t length);

#endif
