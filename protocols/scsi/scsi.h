/*
 * scsi: the SCSI block-device core (SBC-3 / SPC-4) over a bdev, shared by
 * every SCSI transport (the iSCSI target first).  Transport-independent:
 * a task is a CDB, the data the initiator sent (collected by the
 * transport before execution), room for the data to return, and a
 * completion; the core decodes the CDB, runs it against the LUN's bdev
 * (asynchronously for I/O, on the submitter's aio_context) and fills in
 * the status, sense data and data-in length.  Testable without sockets.
 *
 * Errors are answered as the standards say: CHECK CONDITION with fixed
 * format sense (key / ASC / ASCQ, and the sense-key-specific field
 * pointer for invalid fields in the CDB); unit attentions (power on /
 * reset) once per I_T nexus; DATA PROTECT for writes to a read-only LUN;
 * RESERVATION CONFLICT as the LUN's reservations say (persistent ones and
 * SPC-2 RESERVE / RELEASE), with the unit attentions SPC-4 owes the
 * registrants a PREEMPT, CLEAR or RELEASE affects.
 *
 * Tasks of every transport and thread may share a LUN: a COMPARE AND
 * WRITE's read, compare and write run with no overlapping write of another
 * task, or of another protocol using the same writers' lock, in between
 * (those wait, without blocking any event loop, and resume on their own
 * thread).
 */
#ifndef LUNA_PROTOCOLS_SCSI_SCSI_H
#define LUNA_PROTOCOLS_SCSI_SCSI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/bdev.h"
#include "block/range_lock.h"

/* SAM status codes. */
#define SCSI_STATUS_GOOD 0x00
#define SCSI_STATUS_CHECK_CONDITION 0x02
#define SCSI_STATUS_RESERVATION_CONFLICT 0x18
#define SCSI_STATUS_TASK_SET_FULL 0x28

#define SCSI_SENSE_MAX 18 /* fixed-format sense, as luna returns it */

struct scsi_lun;

struct scsi_lun_options {
    struct bdev *bdev;      /* borrowed: outlives the LUN */
    bool readonly;          /* or the bdev's own read-only capability */
    const char *vendor;     /* INQUIRY: at most 8 characters ("LUNA") */
    const char *product;    /* at most 16 ("lunad") */
    const char *revision;   /* at most 4 */
    const char *serial;     /* VPD 0x80 and the T10 vendor id of VPD 0x83 */
    uint64_t naa;           /* VPD 0x83 NAA IEEE registered identifier (type 6 top nibble set by the core) */
    bool write_cache;       /* MODE SENSE caching page WCE: the bdev has a volatile cache */
    /*
     * APTPL (protocols/scsi/scsi_persist.h): the store the LUN's
     * reservations are saved in when an initiator asks, under the
     * transport's stable name for the LUN.  NULL: APTPL is not offered.
     */
    struct scsi_persist_store *persist;
    const char *persist_key;
    /*
     * The writers' range lock of the disk (the export's), borrowed, so
     * COMPARE AND WRITE is atomic against its other protocols' writers
     * too.  NULL: the LUN orders its own writes only.
     */
    struct range_lock *writers;
};

/* 0 or a negative errno (-ENOMEM). */
int scsi_lun_create(const struct scsi_lun_options *options, struct scsi_lun **out);
void scsi_lun_destroy(struct scsi_lun *lun);

/*
 * True while the LUN holds persistent reservations or registrations: they
 * outlive the sessions that made them (SPC-4 §5.12), so a transport keeps
 * such a LUN when its last session leaves.
 */
bool scsi_lun_has_reservations(struct scsi_lun *lun);

/* The I_T nexus is gone (logout, a dropped connection): its RESERVE(6)/(10) reservation goes with it. */
void scsi_lun_nexus_lost(struct scsi_lun *lun, const char *nexus);
/*
 * LOGICAL UNIT RESET or a target reset, received from nexus: RESERVE(6)/(10)
 * reservations are released (persistent ones stay) and every other nexus
 * gets the reset unit attention.
 */
void scsi_lun_reset(struct scsi_lun *lun, const char *nexus);

struct scsi_task {
    /* Filled by the transport. */
    struct scsi_lun *lun;        /* NULL: the LUN the initiator addressed does not exist */
    uint8_t cdb[16];
    const char *nexus;           /* the I_T nexus (initiator port name): unit attentions, reservations */
    const uint8_t *data_out;     /* what the initiator sent (WRITE, UNMAP, MODE SELECT...) */
    size_t data_out_length;
    uint8_t *data_in;            /* room for what goes back (READ, INQUIRY...) */
    size_t data_in_capacity;     /* the initiator's expected transfer length, at most */
    const uint64_t *luns;        /* REPORT LUNS: the target's LUN numbers */
    size_t lun_count;
    struct aio_context *ctx;     /* where I/O completes */
    void (*complete)(struct scsi_task *task);
    void *opaque;

    /* Filled by the core before complete() runs. */
    uint8_t status;
    uint8_t sense[SCSI_SENSE_MAX];
    size_t sense_length;
    size_t data_in_length;       /* bytes of data_in filled */
    size_t data_out_wanted;      /* bytes the command wanted to receive (WRITE: its transfer length) */
    size_t data_in_wanted;       /* bytes the command had to return: more than data_in_length when
                                    data_in_capacity cut it short (the transport's overflow residual) */

    /* The core's while the task runs. */
    struct bdev_io io;
    struct iovec iov;
    uint64_t progress;
    void *work;
    void *guard;                 /* the write range it holds on the LUN (COMPARE AND WRITE atomicity) */
};

/*
 * CHECK CONDITION with fixed-format sense (key, ASC, ASCQ), without running
 * the task: for transports that fail a command before it reaches the core
 * (an iSCSI data sequence error, say).  complete() is not called.
 */
void scsi_sense_set(struct scsi_task *task, uint8_t key, uint8_t asc, uint8_t ascq);

/*
 * Run the task; complete() is called exactly once, possibly before this
 * returns (commands answered without I/O), else on ctx's thread.
 */
void scsi_task_execute(struct scsi_task *task);

#endif
