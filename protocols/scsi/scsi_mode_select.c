/*
 * MODE SELECT(6) and (10).  Nothing luna reports is changeable and nothing
 * is saveable (scsi_mode.c), so a parameter list is accepted when it
 * changes nothing: block descriptors with the LUN's block length, and pages
 * whose every bit equals the current value (SPC-4: a bit not marked
 * changeable must be sent as it is).  Anything else is refused with
 * INVALID FIELD IN PARAMETER LIST, pointing at the offending byte; a list
 * cut short is a PARAMETER LIST LENGTH ERROR.
 */
#include "protocols/scsi/scsi_internal.h"

/*
 * One page at list[at], whose length the caller checked fits.  Returns the
 * page's length, or 0 after answering.
 */
static size_t page_check(struct scsi_task *task, const uint8_t *list, size_t at, size_t length)
{
    uint8_t code = list[at] & 0x3f; /* PS is reserved in MODE SELECT */
    if (list[at] & 0x40) {          /* SPF: luna has no subpages */
        scsi_task_invalid_parameter(task, (unsigned)at, 6);
        return 0;
    }
    uint8_t current[SCSI_MODE_PAGE_MAX], changeable[SCSI_MODE_PAGE_MAX];
    size_t page_length = scsi_mode_page(task->lun, code, false, current);
    if (page_length == 0) {
        scsi_task_invalid_parameter(task, (unsigned)at, 5); /* no such page */
        return 0;
    }
    if ((size_t)list[at + 1] + 2 != page_length) {
        scsi_task_invalid_parameter(task, (unsigned)at + 1, -1); /* not the length MODE SENSE reports */
        return 0;
    }
    if (at + page_length > length) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
        return 0;
    }
    scsi_mode_page(task->lun, code, true, changeable);
    for (size_t i = 2; i < page_length; i++) {
        uint8_t changed = (uint8_t)((list[at + i] ^ current[i]) & ~changeable[i]);
        if (changed) {
            int bit = 7;
            while (!(changed & (1u << bit)))
                bit--;
            scsi_task_invalid_parameter(task, (unsigned)(at + i), bit);
            return 0;
        }
    }
    return page_length;
}

/* The block descriptors: luna cannot change its block length; the number of blocks is ignored (SBC-3). */
static bool descriptors_check(struct scsi_task *task, const uint8_t *list, size_t at, size_t length, bool long_lba)
{
    size_t size = long_lba ? 16 : 8;
    unsigned length_field = task->cdb[0] == 0x15 ? 3 : 6;
    if (length % size) {
        scsi_task_invalid_parameter(task, length_field, -1);
        return false;
    }
    for (size_t end = at + length; at < end; at += size) {
        size_t block_length_at = long_lba ? at + 12 : at + 5;
        uint32_t block_length = long_lba ? load_be32(list + block_length_at) : load_be24(list + block_length_at);
        if (block_length != task->lun->block_size) {
            scsi_task_invalid_parameter(task, (unsigned)block_length_at, -1);
            return false;
        }
    }
    return true;
}

void scsi_mode_select(struct scsi_task *task)
{
    const uint8_t *cdb = task->cdb;
    bool six = cdb[0] == 0x15;
    bool page_format = cdb[1] & 0x10;
    if (cdb[1] & 0x01) { /* SP: nothing can be saved */
        scsi_task_invalid_field(task, 1, 0);
        return;
    }
    size_t length = six ? cdb[4] : load_be16(cdb + 7);
    task->data_out_wanted = length;
    if (length > task->data_out_length)
        length = task->data_out_length; /* what arrived is all there is to check */
    if (length == 0) {
        scsi_task_good(task, 0); /* an empty list changes nothing (SPC-4: not an error) */
        return;
    }
    const uint8_t *list = task->data_out;
    size_t header = six ? 4 : 8;
    if (length < header) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
        return;
    }
    /* Mode data length is reserved here; the device-specific parameter's WP and DPOFUA are MODE SENSE's. */
    unsigned medium_type_at = six ? 1 : 2;
    if (list[medium_type_at] != 0) { /* a direct-access device has medium type 0 */
        scsi_task_invalid_parameter(task, medium_type_at, -1);
        return;
    }
    bool long_lba = !six && (list[4] & 0x01);
    size_t descriptors = six ? list[3] : load_be16(list + 6);
    if (descriptors > length - header) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
        return;
    }
    if (!descriptors_check(task, list, header, descriptors, long_lba))
        return;
    size_t at = header + descriptors;
    if (at < length && !page_format) {
        scsi_task_invalid_field(task, 1, 4); /* vendor-specific parameters: luna has none */
        return;
    }
    while (at < length) {
        if (length - at < 2) {
            scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
            return;
        }
        size_t page_length = page_check(task, list, at, length);
        if (page_length == 0)
            return;
        at += page_length;
    }
    scsi_task_good(task, 0);
}
