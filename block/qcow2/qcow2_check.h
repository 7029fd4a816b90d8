/*
 * qcow2_check: consistency check and repair of a qcow2 image, as QEMU's
 * qcow2_check_refcounts does it (same checks, same messages, same counts),
 * on a file descriptor with plain POSIX I/O: luna-img check uses it, and
 * lunad can use it to repair a dirty (lazy refcounts) image at open.
 *
 * Every cluster the metadata references is counted in memory (header, L1
 * tables, L2 tables and the data they map, the refcount table and blocks,
 * the snapshot table and every snapshot's tables, the bitmap directory and
 * bitmap tables), then compared with the stored refcounts.  Repairs write
 * refcount blocks first, flush, then L1/L2 entries (COPIED flags), flush,
 * and the header last, so a crash during a repair leaves at worst leaks.
 * When a used cluster has refcount 0 (or a refcount block is broken), the
 * whole refcount structure is rebuilt past the end of the image and the
 * header switched to it after a flush.
 */
#ifndef LUNA_BLOCK_QCOW2_CHECK_H
#define LUNA_BLOCK_QCOW2_CHECK_H

#include <stdint.h>

/* What to repair (QEMU's BdrvCheckMode). */
enum qcow2_check_fix {
    QCOW2_CHECK_FIX_NONE = 0,
    QCOW2_CHECK_FIX_LEAKS = 1,  /* lower refcounts that are too high */
    QCOW2_CHECK_FIX_ERRORS = 2, /* raise refcounts that are too low, COPIED flags, rebuild */
    QCOW2_CHECK_FIX_ALL = 3,
};

/* QEMU's BdrvCheckResult with its BlockFragInfo. */
struct qcow2_check_result {
    int64_t corruptions;
    int64_t leaks;
    int64_t check_errors;
    int64_t corruptions_fixed;
    int64_t leaks_fixed;
    int64_t image_end_offset;
    int64_t total_clusters;
    int64_t allocated_clusters;
    int64_t fragmented_clusters;
    int64_t compressed_clusters;
};

/* One line of qemu-img's check output (no trailing newline), as QEMU prints it to stderr. */
typedef void qcow2_check_message_fn(void *opaque, const char *line);

/*
 * Check (and with fix, repair) the qcow2 image open on fd (read-write when
 * fix is not NONE); name is used in messages only.  Locking is the
 * caller's business.  After a repair that leaves no corruption the dirty
 * and corrupt bits are cleared, as QEMU does.  Returns 0 when the check
 * completed (the result says what was found), or a negative errno when it
 * could not (I/O error, no memory, not a valid qcow2 header: then
 * *error_message, if given, says why).
 */
int qcow2_check_fd(int fd, const char *name, enum qcow2_check_fix fix, struct qcow2_check_result *result,
                   qcow2_check_message_fn *message, void *opaque, char **error_message);

/* The same on a path, opened here (read-write when repairing); takes no locks. */
int qcow2_check(const char *path, enum qcow2_check_fix fix, struct qcow2_check_result *result,
                qcow2_check_message_fn *message, void *opaque, char **error_message);

#endif
