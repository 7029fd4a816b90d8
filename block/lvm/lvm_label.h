/*
 * lvm_label: the on-disk structures of an LVM2 physical volume that lead to
 * its metadata: the label ("LABELONE" in one of the first four sectors,
 * CRC-checked) with the PV header (UUID, size, data and metadata areas),
 * and a metadata area's header (" LVM2 x[5A%r0N*>", CRC-checked) whose
 * first location points at the current metadata text in the area's
 * circular buffer (the text may wrap to just after the header; its CRC is
 * checked too).  Pure over a read callback, so tests feed it buffers.
 */
#ifndef LUNA_BLOCK_LVM_LVM_LABEL_H
#define LUNA_BLOCK_LVM_LVM_LABEL_H

#include <stddef.h>
#include <stdint.h>

#include "block/lvm/lvm_metadata.h"

#define LVM_MAX_METADATA_AREAS 2

struct lvm_area {
    uint64_t offset; /* bytes from the start of the PV */
    uint64_t size;
};

struct lvm_pv_label {
    char uuid[LVM_UUID_LENGTH + 1];
    uint64_t device_size;
    unsigned metadata_area_count;
    struct lvm_area metadata_areas[LVM_MAX_METADATA_AREAS];
};

/* Read length bytes at offset: 0, or -errno (short reads are errors). */
typedef int (*lvm_read_fn)(void *opaque, void *buffer, size_t length, uint64_t offset);

/* LVM's CRC: CRC-32 (IEEE, reflected) from initial, without the final inversion. */
uint32_t lvm_crc(uint32_t initial, const void *buffer, size_t length);

/* The label of a PV of size bytes.  0; -ENOENT when there is no label; -EINVAL with a message when it is corrupt. */
int lvm_label_read(lvm_read_fn read, void *opaque, uint64_t size, struct lvm_pv_label *label, char **error_message);

/*
 * The current metadata text of a metadata area: *text malloc'd (NUL
 * terminated), *length its length.  0; -ENOENT when the area holds none
 * (or is marked ignored); -EINVAL with a message when it is corrupt.
 */
int lvm_metadata_area_read(lvm_read_fn read, void *opaque, uint64_t size, const struct lvm_area *area, char **text,
                           size_t *length, char **error_message);

#endif
