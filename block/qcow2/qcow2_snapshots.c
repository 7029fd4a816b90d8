#include "block/qcow2/qcow2_snapshots.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/file_util.h"

int qcow2_read_fd(void *opaque, void *buffer, size_t length, uint64_t offset)
{
    return file_pread_full(*(const int *)opaque, buffer, length, offset);
}

static int table_read(qcow2_read_fn *read, void *opaque, const struct qcow2_header *h, uint64_t file_size,
                      bool keep_raw, struct qcow2_snapshot_table *table)
{
    memset(table, 0, sizeof(*table));
    if (!h->nb_snapshots)
        return 0;
    table->entries = calloc(h->nb_snapshots, sizeof(*table->entries));
    table->starts = keep_raw ? calloc((size_t)h->nb_snapshots + 1, sizeof(*table->starts)) : NULL;
    if (!table->entries || (keep_raw && !table->starts))
        return -ENOMEM;
    uint64_t offset = h->snapshots_offset;
    for (uint32_t i = 0; i < h->nb_snapshots; i++) {
        table->bad_entry = i;
        if (keep_raw)
            table->starts[i] = offset - h->snapshots_offset;
        uint8_t fixed[QCOW2_SNAPSHOT_FIXED_SIZE];
        if (offset > file_size || file_size - offset < sizeof(fixed) || read(opaque, fixed, sizeof(fixed), offset) < 0)
            return -EINVAL;
        size_t size = qcow2_snapshot_entry_size(fixed), next;
        if (size == 0)
            return -EFBIG;
        if (file_size - offset < size)
            return -EINVAL;
        uint8_t *entry = malloc(size);
        if (!entry)
            return -ENOMEM;
        int rc = read(opaque, entry, size, offset);
        if (rc == 0)
            rc = qcow2_snapshot_decode(entry, size, &table->entries[i], &next);
        free(entry);
        if (rc < 0)
            return rc == -ENOMEM ? rc : -EINVAL;
        table->count = i + 1;
        offset += next;
    }
    table->size = offset - h->snapshots_offset;
    if (!keep_raw)
        return 0;
    table->starts[table->count] = table->size;
    /* The padding after the last entry may lie past the end of the file: it reads as zeroes. */
    table->raw = calloc(1, table->size);
    if (!table->raw)
        return -ENOMEM;
    uint64_t readable = file_size - h->snapshots_offset < table->size ? file_size - h->snapshots_offset : table->size;
    return read(opaque, table->raw, readable, h->snapshots_offset) < 0 ? -EINVAL : 0;
}

int qcow2_snapshot_table_read(int fd, const struct qcow2_header *h, uint64_t file_size,
                              struct qcow2_snapshot_table *table)
{
    return table_read(qcow2_read_fd, &fd, h, file_size, false, table);
}

int qcow2_snapshot_table_read_raw(qcow2_read_fn *read, void *opaque, const struct qcow2_header *h,
                                  uint64_t file_size, struct qcow2_snapshot_table *table)
{
    return table_read(read, opaque, h, file_size, true, table);
}

void qcow2_snapshot_table_clear(struct qcow2_snapshot_table *table)
{
    for (uint32_t i = 0; i < table->count; i++)
        qcow2_snapshot_clear(&table->entries[i]);
    free(table->entries);
    free(table->raw);
    free(table->starts);
    memset(table, 0, sizeof(*table));
}
