/*
 * scsi_internal: the LUN's state and the pieces the command files share:
 * answering a task (good, or CHECK CONDITION with sense) and the command table that drives dispatch (and, later, REPORT
 * SUPPORTED OPERATION CODES, so the two never disagree).
 */
#ifndef LUNA_PROTOCOLS_SCSI_SCSI_INTERNAL_H
#define LUNA_PROTOCOLS_SCSI_SCSI_INTERNAL_H

#include <pthread.h>

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
#define ASC_PARAMETER_LIST_LENGTH_ERROR 0x1a, 0x00
#define ASC_UNRECOVERED_READ_ERROR 0x11, 0x00
#define ASC_WRITE_ERROR 0x0c, 0x00
#define ASC_INTERNAL_TARGET_FAILURE 0x44, 0x00

/* Limits announced in the block limits page and enforced by the commands. */
#define MAX_UNMAP_BLOCKS 0x100000u /* per UNMAP descriptor / WRITE SAME: 512 MiB of 512-byte blocks */
#define MAX_UNMAP_DESCRIPTORS 64u

struct scsi_lun {
    struct bdev *bdev;
    bool readonly;
    bool write_cache;
    bool thin;             /* the bdev can deallocate: LBPME, UNMAP */
    bool unmapped_zero;    /* deallocated blocks read as zeroes: LBPRZ */
    uint32_t block_size;
    uint64_t blocks;
    char vendor[9], product[17], revision[5];
    char *serial;
    uint64_t naa;
    pthread_mutex_t lock;  /* attended */
    char **attended;       /* nexuses that have been told of the power-on reset */
    size_t attended_count;
};

/* Answering (each calls task->complete). */
void scsi_task_good(struct scsi_task *task, size_t data_in_length);
void scsi_task_check(struct scsi_task *task, uint8_t key, uint8_t asc, uint8_t ascq);
/* ILLEGAL REQUEST / INVALID FIELD IN CDB, pointing at byte (and bit, or -1) of the CDB. */
void scsi_task_invalid_field(struct scsi_task *task, unsigned byte, int bit);
/* A bdev error as sense: -EROFS write protected, -EINVAL out of range, others medium / hardware errors. */
void scsi_task_errno(struct scsi_task *task, int error, bool write);

/* Copy length bytes of an answer built in a local buffer into data_in (cut at its capacity), then good. */
void scsi_task_reply(struct scsi_task *task, const uint8_t *answer, size_t length);

/* The commands, by file. */
void scsi_inquiry(struct scsi_task *task);
void scsi_mode_sense(struct scsi_task *task);
void scsi_read_capacity10(struct scsi_task *task);
void scsi_service_action_in16(struct scsi_task *task);
void scsi_read_write(struct scsi_task *task);
void scsi_synchronize_cache(struct scsi_task *task);
void scsi_unmap(struct scsi_task *task);
void scsi_write_same(struct scsi_task *task);

#endif
