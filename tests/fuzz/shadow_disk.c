#include "shadow_disk.h"

#include <stdlib.h>
#include <string.h>

struct shadow_disk {
    uint64_t size;
    uint8_t *value;
    uint8_t *unknown; /* one byte per disk byte: calloc'd zero means known */
};

struct shadow_disk *shadow_disk_new(uint64_t size)
{
    struct shadow_disk *disk = calloc(1, sizeof(*disk));
    if (!disk)
        return NULL;
    disk->size = size;
    /* calloc of this size maps fresh zero pages: cheap until touched. */
    disk->value = calloc(1, size ? size : 1);
    disk->unknown = calloc(1, size ? size : 1);
    if (!disk->value || !disk->unknown) {
        shadow_disk_free(disk);
        return NULL;
    }
    return disk;
}

void shadow_disk_free(struct shadow_disk *disk)
{
    if (!disk)
        return;
    free(disk->value);
    free(disk->unknown);
    free(disk);
}

/* Clip [offset, offset + length) to the disk; false when nothing is left. */
static bool clip(const struct shadow_disk *disk, uint64_t offset, uint64_t *length)
{
    if (offset >= disk->size)
        return false;
    if (*length > disk->size - offset)
        *length = disk->size - offset;
    return *length > 0;
}

void shadow_disk_set(struct shadow_disk *disk, uint64_t offset, const uint8_t *data,
                     uint64_t length)
{
    if (!clip(disk, offset, &length))
        return;
    if (data)
        memcpy(disk->value + offset, data, length);
    else
        memset(disk->value + offset, 0, length);
    memset(disk->unknown + offset, 0, length);
}

void shadow_disk_forget(struct shadow_disk *disk, uint64_t offset, uint64_t length)
{
    if (clip(disk, offset, &length))
        memset(disk->unknown + offset, 1, length);
}

bool shadow_disk_matches(const struct shadow_disk *disk, uint64_t offset, const uint8_t *data,
                         uint64_t length, uint64_t *mismatch, uint8_t *expected)
{
    if (!clip(disk, offset, &length))
        return true;
    /* Reads are long and mostly right: settle the common case with memcmp. */
    if (!memchr(disk->unknown + offset, 1, length) && data &&
        memcmp(disk->value + offset, data, length) == 0)
        return true;
    for (uint64_t i = 0; i < length; i++) {
        uint8_t actual = data ? data[i] : 0;
        if (!disk->unknown[offset + i] && disk->value[offset + i] != actual) {
            *mismatch = offset + i;
            *expected = disk->value[offset + i];
            return false;
        }
    }
    return true;
}
