/*
 * lvm: LVM2 logical volumes as bdevs, by name ("VG/LV"), with or without
 * device-mapper.
 *
 * Without lvm_devices the LV must be active: /dev/VG/LV is opened as a
 * host device (the usual case on a SAN host).  With lvm_devices (the PVs:
 * block devices or image files), the VG is read in user space: each PV's
 * label and metadata area (lvm_label.h), the metadata text with the
 * highest seqno (lvm_metadata.h), and the LV's linear and striped segments
 * mapped onto the PVs (lvm_map.h), so the LV is read and written in place
 * where device-mapper is absent (containers, rescue systems, VGs on disk
 * images).  Requests inside one PV piece go straight to that PV's bdev,
 * asynchronously; others run piece by piece on the pool.
 *
 * Safety: an LV device-mapper has active is never written this way (the
 * kernel's mapping and caches would disagree with ours); an LV lvm marks
 * read-only, or a snapshot's origin or store, is opened read-only; other
 * segment types (thin, raid, mirror, cache, snapshot) are refused.  On
 * every flush the metadata is read again: when its seqno moved and the
 * LV's mapping changed (lvextend, pvmove...), every later write fails
 * with -EIO rather than land where the LV no longer is.
 */
#ifndef LUNA_BLOCK_LVM_LVM_H
#define LUNA_BLOCK_LVM_LVM_H

#include <stdbool.h>

#include "block/bdev.h"

/* bdev_open's entry for BDEV_FORMAT_LVM.  0 or -errno and a message. */
int lvm_open(struct bdev *bdev, const struct bdev_options *options, char **error_message);

/*
 * Whether device-mapper has VG/LV active: mapper_directory (normally
 * "/dev/mapper") holds VG-LV with '-' doubled inside each name, as dm
 * names it.  A parameter so tests can point it at a directory of theirs.
 */
bool lvm_device_mapper_active(const char *mapper_directory, const char *vg, const char *lv);

/* Where lvm_open looks (tests replace it before opening). */
extern const char *lvm_mapper_directory;

#endif
