/*
 * qcow2_snapshots: reading an image from a file descriptor, for the tools
 * (luna-img info, qcow2_check): a qcow2_read_fn for the header and the
 * snapshot table.  Entries are decoded by qcow2_format.c; this adds the
 * bounded, entry-by-entry reading.
 */
#ifndef LUNA_BLOCK_QCOW2_SNAPSHOTS_H
#define LUNA_BLOCK_QCOW2_SNAPSHOTS_H

#include <stdint.h>

#include "block/qcow2/qcow2_format.h"

/* A qcow2_read_fn over a file descriptor (opaque: a pointer to the int); bytes past the end read as zeroes. */
int qcow2_read_fd(void *opaque, void *buffer, size_t length, uint64_t offset);

struct qcow2_snapshot_table {
    struct qcow2_snapshot *entries; /* count decoded entries */
    uint32_t count;
    uint64_t size;      /* bytes the table occupies */
    uint32_t bad_entry; /* on failure: the entry that failed */
    /*
     * With qcow2_snapshot_table_read_raw: the table's bytes and where each
     * entry starts in them (count + 1 offsets, the last = size), so entries
     * can be written back unchanged, extra data luna does not know included.
     */
    uint8_t *raw;
    uint64_t *starts;
};

/*
 * Read h->nb_snapshots entries at h->snapshots_offset of the image on fd.
 * 0; -EINVAL when an entry lies outside the file (file_size) or is
 * truncated; -EFBIG when its extra data is too large; -ENOMEM.  On failure
 * table keeps what was decoded before bad_entry; free it either way with
 * qcow2_snapshot_table_clear.
 */
int qcow2_snapshot_table_read(int fd, const struct qcow2_header *h, uint64_t file_size,
                              struct qcow2_snapshot_table *table);

/* The same through any reader, keeping the raw bytes (raw and starts) too. */
int qcow2_snapshot_table_read_raw(qcow2_read_fn *read, void *opaque, const struct qcow2_header *h,
                                  uint64_t file_size, struct qcow2_snapshot_table *table);
void qcow2_snapshot_table_clear(struct qcow2_snapshot_table *table);

#endif
