/*
 * shadow_disk: what a client can know about an export's contents.
 *
 * The reply audit keeps one for the export in use: bytes it knows (zero
 * at the start, then what acknowledged writes and write_zeroes left) and
 * bytes it cannot know (trimmed, failed or raced writes).  Reads and
 * block status are then checked against the known bytes only.
 */
#ifndef LUNA_TESTS_FUZZ_SHADOW_DISK_H
#define LUNA_TESTS_FUZZ_SHADOW_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct shadow_disk;

/* All size bytes known to be zero.  NULL on allocation failure. */
struct shadow_disk *shadow_disk_new(uint64_t size);
void shadow_disk_free(struct shadow_disk *disk);

/* Ranges are clipped to the disk.  data NULL means zeroes. */
void shadow_disk_set(struct shadow_disk *disk, uint64_t offset, const uint8_t *data,
                     uint64_t length);
void shadow_disk_forget(struct shadow_disk *disk, uint64_t offset, uint64_t length);

/*
 * True when every known byte of the range equals data (NULL: zero);
 * otherwise false with the first differing offset and its known value.
 */
bool shadow_disk_matches(const struct shadow_disk *disk, uint64_t offset, const uint8_t *data,
                         uint64_t length, uint64_t *mismatch, uint8_t *expected);

#endif
