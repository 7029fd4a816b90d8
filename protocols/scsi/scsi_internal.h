/*
 * scsi_internal: the LUN's state and the pieces the command files share:
 * answering a task (good, or CHECK CONDITION with sense), decoding the
 * LBA and length common to the block commands, the write guard that
 * makes COMPARE AND WRITE atomic, and the command table that drives both
 * dispatch and REPORT SUPPORTED OPERATION CODES, so the two never
 * disagree.
 */
#ifndef LUNA_PROTOCOLS_SCSI_SCSI_INTERNAL_H
#define LUNA_PROTOCOLS_SCSI_SCSI_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "block/range_lock.h"
#include "common/byte_order.h"
#include "protocols/scsi/scsi.h"

/* Sense keys and the additional sense codes luna uses (key, ASC, ASCQ). */
enum {
    SENSE_NO_SENSE = 0x0,
    SENSE_NOT_READY = 0x2,
    SENSE_MEDIUM_ERROR = 0x3,
    SENSE_HARDWARE_ERROR = 0x4,
    SENSE_ILLEGAL_REQUEST = 0x5,
    SENSE_UNIT_ATTENTION = 0x6,
    SENSE_DATA_PROTECT = 0x7,
    SENSE_ABORTED_COMMAND = 0xb,
    SENSE_MISCOMPARE = 0xe,
};
#define ASC_INVALID_OPCODE 0x20, 0x00
#define ASC_LBA_OUT_OF_RANGE 0x21, 0x00
#define ASC_INVALID_FIELD_IN_CDB 0x24, 0x00
#define ASC_LUN_NOT_SUPPORTED 0x25, 0x00
#define ASC_INVALID_FIELD_IN_PARAMETER_LIST 0x26, 0x00
#define ASC_WRITE_PROTECTED 0x27, 0x00
#define ASC_POWER_ON_RESET 0x29, 0x00
#define ASC_RESERVATIONS_PREEMPTED 0x2a, 0x03
#define ASC_RESERVATIONS_RELEASED 0x2a, 0x04
#define ASC_REGISTRATIONS_PREEMPTED 0x2a, 0x05
#define ASC_CAPACITY_DATA_CHANGED 0x2a, 0x09
#define ASC_PARAMETER_LIST_LENGTH_ERROR 0x1a, 0x00
#define ASC_MISCOMPARE_DURING_VERIFY 0x1d, 0x00
#define ASC_UNRECOVERED_READ_ERROR 0x11, 0x00
#define ASC_WRITE_ERROR 0x0c, 0x00
#define ASC_INTERNAL_TARGET_FAILURE 0x44, 0x00

/* Limits announced in the block limits page and enforced by the commands. */
#define MAX_UNMAP_BLOCKS 0x100000u /* per UNMAP descriptor / WRITE SAME: 512 MiB of 512-byte blocks */
#define MAX_UNMAP_DESCRIPTORS 64u
/* Bounds how long a COMPARE AND WRITE holds the writers of its range off, and its buffer. */
#define MAX_COMPARE_AND_WRITE_BLOCKS 128u

/*
 * What a command does to the medium, for the reservation check: ANY runs
 * whatever is reserved (INQUIRY, REPORT LUNS, the reservation commands
 * themselves); STATUS only conflicts with an SPC-2 reservation (TEST UNIT
 * READY, READ CAPACITY); READ and WRITE as the reservation type says.
 */
enum scsi_access {
    SCSI_ACCESS_WRITE, /* the default: a command not classified is treated as writing */
    SCSI_ACCESS_READ,
    SCSI_ACCESS_STATUS,
    SCSI_ACCESS_ANY,
};

/*
 * Unit attentions a nexus is owed, reported one per command in this order
 * (SAM-5 §5.14: the power-on / reset condition first).
 */
enum scsi_attention {
    SCSI_ATTENTION_POWER_ON = 1u << 0,
    SCSI_ATTENTION_RESERVATIONS_PREEMPTED = 1u << 1,
    SCSI_ATTENTION_RESERVATIONS_RELEASED = 1u << 2,
    SCSI_ATTENTION_REGISTRATIONS_PREEMPTED = 1u << 3,
    SCSI_ATTENTION_CAPACITY_CHANGED = 1u << 4,
};

/* A nexus that has addressed the LUN, and the unit attentions pending for it. */
struct scsi_nexus_state {
    char *nexus;
    unsigned attentions; /* enum scsi_attention bits */
};

/* How an EXTENDED COPY with a held list identifier ended, for COPY STATUS (scsi_copy.c). */
#define SCSI_COPY_RESULTS 16
struct scsi_copy_result {
    char *nexus;          /* NULL: unused */
    uint8_t list_id;
    uint8_t status;       /* COPY MANAGER STATUS */
    uint16_t segments;
    uint32_t kibibytes;
};

/* Registrations a LUN keeps at most (further ones: INSUFFICIENT REGISTRATION RESOURCES). */
#define SCSI_MAX_REGISTRATIONS 64

/* A persistent reservation registration: an I_T nexus and its key. */
struct scsi_registration {
    char *nexus;
    uint64_t key;
};

struct scsi_lun {
    struct bdev *bdev;
    bool readonly;
    bool write_cache;
    bool thin;             /* the bdev can deallocate: LBPME, UNMAP */
    bool unmapped_zero;    /* deallocated blocks read as zeroes: LBPRZ */
    uint32_t block_size;
    /*
     * The bdev's size when the LUN last looked, and its blocks: an export
     * grown at a reload is noticed by the next command (scsi_lun.c), so
     * blocks changes while tasks run on other threads: read it with
     * scsi_lun_blocks().
     */
    uint64_t size_seen;    /* written under lock, read atomically */
    uint64_t blocks;
    char vendor[9], product[17], revision[5];
    char *serial;
    uint64_t naa;
    pthread_mutex_t lock;  /* nexuses, the reservations */
    /* Reservations (scsi_reservation.c). */
    struct scsi_registration *registrations;
    size_t registration_count;
    uint32_t generation;
    bool reserved;
    uint8_t reservation_type;
    char reservation_holder[256];
    char *legacy_holder;   /* RESERVE(6)/(10): the nexus holding the LUN, or NULL */
    /* APTPL (scsi_persist.c): where the reservations are saved, and whether they are. */
    struct scsi_persist_store *persist; /* NULL: APTPL not offered */
    char *persist_key;
    bool aptpl;            /* the last valid APTPL bit received was one */
    /*
     * reserved || legacy_holder, readable without the lock: the conflict
     * check every command makes costs nothing while nothing is reserved.
     * Set by scsi_reservations_changed, under the lock.
     */
    atomic_bool restricted;
    /*
     * Every nexus that has addressed the LUN: one not listed is owed the
     * power-on unit attention at its first command.
     */
    struct scsi_nexus_state *nexuses;
    size_t nexus_count;
    struct scsi_copy_result copy_results[SCSI_COPY_RESULTS]; /* under lock */
    unsigned copy_result_next;
    /*
     * Every write in progress, by byte range (scsi_guard.c): a COMPARE AND
     * WRITE holds its range alone, other writes share theirs.  The
     * export's when the transport gives it (so NBD writes are ordered
     * too), else own_writers.  Thread-safe on its own.
     */
    struct range_lock *writers;
    struct range_lock own_writers;
};

static inline uint64_t scsi_lun_blocks(const struct scsi_lun *lun)
{
    return __atomic_load_n(&lun->blocks, __ATOMIC_RELAXED);
}

/* The most blocks one COMPARE AND WRITE may name: the block limits page's and the command's limit. */
static inline uint32_t scsi_max_compare_and_write(const struct scsi_lun *lun)
{
    uint32_t by_transfer = lun->bdev->limits.max_transfer / lun->block_size;
    return by_transfer < MAX_COMPARE_AND_WRITE_BLOCKS ? by_transfer : MAX_COMPARE_AND_WRITE_BLOCKS;
}

/* Owe nexus a unit attention (under lun->lock); a nexus not yet seen gets the power-on one anyway. */
void scsi_attention_raise(struct scsi_lun *lun, const char *nexus, enum scsi_attention attention);

/* ---- scsi_persist.c (APTPL) ---- */
/* At creation: the LUN's saved reservations, if the store has them.  0 or -ENOMEM. */
int scsi_persist_restore(struct scsi_lun *lun);
/* The reservations as their state file holds them (malloc'd), under lun->lock; NULL out of memory. */
char *scsi_persist_snapshot(struct scsi_lun *lun);
/*
 * Save text (taken; NULL removes the file) as the LUN's state, on the
 * pool; done(task, 0 or -errno) then runs on task->ctx's thread.  Returns
 * 0, or -errno when it could not start (done will not run).
 */
int scsi_persist_save(struct scsi_lun *lun, char *text, struct scsi_task *task,
                      void (*done)(struct scsi_task *task, int result));

/* ---- scsi_reservation.c ---- */
bool scsi_reservation_conflict(struct scsi_lun *lun, const char *nexus, enum scsi_access access);
/* After changing the reservations, under lun->lock: keeps lun->restricted true to them. */
void scsi_reservations_changed(struct scsi_lun *lun);
void scsi_reservations_clear(struct scsi_lun *lun);
void scsi_reserve(struct scsi_task *task);
void scsi_release(struct scsi_task *task);
void scsi_persistent_reserve_in(struct scsi_task *task);
void scsi_persistent_reserve_out(struct scsi_task *task);
/* RESERVATION CONFLICT status (no sense data). */
void scsi_task_conflict(struct scsi_task *task);

/* Answering (each calls task->complete, after leaving the task's write guard). */
void scsi_task_good(struct scsi_task *task, size_t data_in_length);
void scsi_task_check(struct scsi_task *task, uint8_t key, uint8_t asc, uint8_t ascq);
/* ILLEGAL REQUEST / INVALID FIELD IN CDB, pointing at byte (and bit, or -1) of the CDB. */
void scsi_task_invalid_field(struct scsi_task *task, unsigned byte, int bit);
/* ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST, pointing at byte (and bit, or -1) of the data out. */
void scsi_task_invalid_parameter(struct scsi_task *task, unsigned byte, int bit);
/* MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION, the INFORMATION field the first differing byte's offset. */
void scsi_task_miscompare(struct scsi_task *task, uint64_t offset);
/* A bdev error as sense: -EROFS write protected, -EINVAL out of range, others medium / hardware errors. */
void scsi_task_errno(struct scsi_task *task, int error, bool write);

/*
 * Refusals several commands share; true after answering.  Protection
 * information is not offered: RDPROTECT / WRPROTECT / VRPROTECT (CDB byte
 * 1, bits 7-5) set is an invalid field.  A read-only LUN takes no write:
 * DATA PROTECT / WRITE PROTECTED.
 */
bool scsi_task_refuses_protection(struct scsi_task *task);
bool scsi_task_refuses_write(struct scsi_task *task);

/* Copy length bytes of an answer built in a local buffer into data_in (cut at its capacity), then good. */
void scsi_task_reply(struct scsi_task *task, const uint8_t *answer, size_t length);

/* LBA and block count checked against the LUN; false after answering LBA OUT OF RANGE. */
bool scsi_task_range_check(struct scsi_task *task, uint64_t lba, uint64_t blocks);

/*
 * The LBA and length (transfer, verification, prefetch) fields of the block
 * commands, at the places the CDB's group puts them: 10-byte CDBs (groups 1
 * and 2) LBA in 2-5 and length in 7-8, 12-byte (group 5) 2-5 and 6-9,
 * 16-byte (group 4) 2-9 and 10-13.  Not for the 6-byte READ and WRITE.
 */
static inline void scsi_cdb_lba_length(const uint8_t *cdb, uint64_t *lba, uint64_t *length)
{
    switch (cdb[0] >> 5) {
    case 4:
        *lba = load_be64(cdb + 2);
        *length = load_be32(cdb + 10);
        break;
    case 5:
        *lba = load_be32(cdb + 2);
        *length = load_be32(cdb + 6);
        break;
    default:
        *lba = load_be32(cdb + 2);
        *length = load_be16(cdb + 7);
        break;
    }
}

/* The CDB byte holding that length, for the field pointer of an invalid length. */
static inline unsigned scsi_cdb_length_byte(const uint8_t *cdb)
{
    switch (cdb[0] >> 5) {
    case 4: return 10;
    case 5: return 6;
    default: return 7;
    }
}

/*
 * The write guard (scsi_guard.c).  Enter before a task modifies blocks
 * [lba, lba + blocks): start(task) runs once no earlier overlapping write
 * conflicts (shared: only COMPARE AND WRITEs conflict; exclusive: every
 * write does), at once or later on the task's own aio_context thread.  The
 * guard is left by scsi_guard_leave or, at the latest, when the task is
 * answered.  Out of memory: the task is answered instead.
 */
void scsi_guard_enter(struct scsi_task *task, uint64_t lba, uint64_t blocks, bool exclusive,
                      void (*start)(struct scsi_task *task));
void scsi_guard_leave(struct scsi_task *task);

/* The offset of the first byte where a and b differ, length when they do not (scsi_verify.c). */
size_t scsi_first_difference(const uint8_t *a, const uint8_t *b, size_t length);

/* ---- one bdev request for the task (scsi_rw.c) ---- */
/* Fill task->io (buffer NULL: none), to submit now or once the task's write guard lets it. */
void scsi_task_prepare_io(struct scsi_task *task, enum bdev_op op, uint32_t flags, uint64_t offset, uint64_t length,
                          void *buffer, void (*complete)(struct bdev_io *io));
/* Submit task->io, prepared by the caller, to the LUN's bdev (a guard's start). */
void scsi_submit_prepared(struct scsi_task *task);
/* Prepare and submit at once. */
void scsi_task_submit_io(struct scsi_task *task, enum bdev_op op, uint32_t flags, uint64_t offset, uint64_t length,
                         void *buffer, void (*complete)(struct bdev_io *io));
/*
 * Read [offset, offset + length) into a buffer of its own, kept in
 * task->work; its completion takes it with scsi_task_read_result: the
 * buffer (the caller frees it), or NULL once a read error has answered the
 * task.  Out of memory: the task is answered at once.
 */
void scsi_task_read_into_work(struct scsi_task *task, uint64_t offset, uint64_t length,
                              void (*complete)(struct bdev_io *io));
uint8_t *scsi_task_read_result(struct bdev_io *io);

/*
 * A mode page as MODE SENSE returns it (scsi_mode.c): its current values,
 * or with changeable its mask of changeable bits.  Returns its length
 * (header included), 0 for a page the LUN does not have.
 */
size_t scsi_mode_page(const struct scsi_lun *lun, uint8_t page, bool changeable, uint8_t *out);
#define SCSI_MODE_PAGE_MAX 20

/* ---- the command table (scsi_commands.c) ---- */

struct scsi_command {
    uint8_t opcode;
    enum scsi_access access;
    uint8_t service_action;   /* when has_service_action: CDB byte 1, bits 4-0 */
    bool has_service_action;
    bool without_attention;   /* INQUIRY, REPORT LUNS, REQUEST SENSE: not held up by a unit attention */
    uint8_t cdb_length;
    /*
     * CDB usage data (SPC-4 REPORT SUPPORTED OPERATION CODES): the opcode,
     * the service action where it has one, and a one for every other bit
     * the command's code evaluates (reserved and ignored bits are zero).
     */
    uint8_t usage[16];
    void (*run)(struct scsi_task *task);
};

extern const struct scsi_command scsi_commands[];
extern const size_t scsi_command_count;

/* The commands, by file. */
void scsi_test_unit_ready(struct scsi_task *task);      /* scsi_basic.c */
void scsi_request_sense(struct scsi_task *task);
void scsi_report_luns(struct scsi_task *task);
void scsi_accepted(struct scsi_task *task);
void scsi_prefetch(struct scsi_task *task);
void scsi_read_defect_data(struct scsi_task *task);
void scsi_inquiry(struct scsi_task *task);              /* scsi_inquiry.c */
void scsi_mode_sense(struct scsi_task *task);           /* scsi_mode.c */
void scsi_mode_select(struct scsi_task *task);          /* scsi_mode_select.c */
void scsi_read_capacity10(struct scsi_task *task);      /* scsi_rw.c */
void scsi_read_capacity16(struct scsi_task *task);
void scsi_get_lba_status(struct scsi_task *task);
void scsi_read_write(struct scsi_task *task);
void scsi_synchronize_cache(struct scsi_task *task);
void scsi_unmap(struct scsi_task *task);
void scsi_write_same(struct scsi_task *task);
void scsi_verify(struct scsi_task *task);               /* scsi_verify.c */
void scsi_write_and_verify(struct scsi_task *task);
void scsi_compare_and_write(struct scsi_task *task);    /* scsi_compare_write.c */
void scsi_orwrite(struct scsi_task *task);
void scsi_report_supported_opcodes(struct scsi_task *task); /* scsi_opcodes.c */
void scsi_extended_copy(struct scsi_task *task);        /* scsi_copy.c */
void scsi_receive_copy_results(struct scsi_task *task);
void scsi_copy_results_clear(struct scsi_lun *lun);

/*
 * Is designator (a designation descriptor: code set, type, length, then
 * the designator) one of the LUN's Device Identification page?
 * (scsi_inquiry.c)
 */
bool scsi_lun_has_designator(const struct scsi_lun *lun, const uint8_t *designator);

#endif
