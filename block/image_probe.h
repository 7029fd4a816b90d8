/*
 * image_probe: which image format a file holds, from its first bytes, by
 * qemu-img's rules (qcow2, vmdk, vdi, vpc magics; anything else is raw).
 * Used where a format was not given: luna-img, and backing files named
 * without a format.  lunad never probes an export (a raw guest disk could
 * be made to look like an image), as qemu-nbd with -f.
 */
#ifndef LUNA_BLOCK_IMAGE_PROBE_H
#define LUNA_BLOCK_IMAGE_PROBE_H

#include "block/bdev.h"

/* The format at path; BDEV_FORMAT_AUTO (raw or host device) when no magic matches or it cannot be read. */
enum bdev_format image_probe(const char *path);

#endif
