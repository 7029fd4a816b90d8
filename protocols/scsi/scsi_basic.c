/*
 * The commands answered from the LUN's state alone, without I/O: TEST UNIT
 * READY, REQUEST SENSE, REPORT LUNS, START STOP UNIT, PREVENT ALLOW MEDIUM
 * REMOVAL and PRE-FETCH.
 */
#include <errno.h>
#include <stdlib.h>

#include "protocols/scsi/scsi_internal.h"

void scsi_test_unit_ready(struct scsi_task *task) { scsi_task_good(task, 0); }

void scsi_report_luns(struct scsi_task *task)
{
    uint32_t allocation = load_be32(task->cdb + 6);
    if (allocation < 16) {
        scsi_task_invalid_field(task, 6, -1); /* SPC-4: at least 16 */
        return;
    }
    size_t length = 8 + 8 * task->lun_count;
    uint8_t *answer = calloc(1, length);
    if (!answer) {
        scsi_task_errno(task, -ENOMEM, false);
        return;
    }
    store_be32(answer, (uint32_t)(8 * task->lun_count));
    for (size_t i = 0; i < task->lun_count; i++) {
        /* Peripheral device addressing for LUNs below 256, flat space above (SAM-5). */
        uint64_t lun = task->luns[i];
        uint8_t *entry = answer + 8 + 8 * i;
        if (lun < 256) {
            entry[1] = (uint8_t)lun;
        } else {
            entry[0] = (uint8_t)(0x40 | ((lun >> 8) & 0x3f));
            entry[1] = (uint8_t)lun;
        }
    }
    size_t wanted = allocation < length ? allocation : length;
    scsi_task_reply(task, answer, wanted);
    free(answer);
}

void scsi_request_sense(struct scsi_task *task)
{
    if (task->cdb[1] & 0x01) { /* DESC: descriptor format is not offered */
        scsi_task_invalid_field(task, 1, 0);
        return;
    }
    /* Errors are reported with their command (autosense): nothing is pending here. */
    uint8_t answer[SCSI_SENSE_MAX] = {0x70, 0, SENSE_NO_SENSE, 0, 0, 0, 0, SCSI_SENSE_MAX - 8};
    size_t allocation = task->cdb[4];
    scsi_task_reply(task, answer, allocation < sizeof(answer) ? allocation : sizeof(answer));
}

/*
 * READ DEFECT DATA (10) and (12) (SBC-3 §5.11, §5.12): a virtual disk has
 * no defects.  The lists asked for are valid and empty, in the format
 * asked for (an empty list reads the same in every format).
 */
void scsi_read_defect_data(struct scsi_task *task)
{
    bool twelve = task->cdb[0] == 0xb7;
    uint8_t lists = task->cdb[twelve ? 1 : 2] & 0x1f; /* REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT */
    uint8_t answer[8] = {0, lists};                   /* PLISTV and GLISTV where asked; no descriptors */
    size_t allocation = twelve ? load_be32(task->cdb + 6) : load_be16(task->cdb + 7);
    size_t length = twelve ? 8 : 4;
    scsi_task_reply(task, answer, allocation < length ? allocation : length);
}

/* START STOP UNIT and PREVENT ALLOW MEDIUM REMOVAL: a disk that is always there accepts them. */
void scsi_accepted(struct scsi_task *task) { scsi_task_good(task, 0); }

/*
 * PRE-FETCH (10) and (16): the range is checked against the capacity and
 * nothing is read ahead (the page cache decides what it keeps), so the
 * blocks are not known to be cached: GOOD, as SBC-3 answers when not all of
 * them went to the cache (CONDITION MET says they all did).  IMMED makes
 * no difference: there is nothing to wait for.
 */
void scsi_prefetch(struct scsi_task *task)
{
    uint64_t lba, blocks;
    scsi_cdb_lba_length(task->cdb, &lba, &blocks);
    if (!scsi_task_range_check(task, lba, blocks))
        return;
    scsi_task_good(task, 0);
}
