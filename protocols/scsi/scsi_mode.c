/*
 * MODE SENSE(6) and (10): the block descriptor and three pages: read-write
 * error recovery (01), caching (08, WCE from the LUN's cache mode) and
 * control (0A).  Nothing is changeable (the changeable values are zeroes)
 * and nothing is saved (saved values are refused, as SPC-4 allows).  The
 * pages are built here for MODE SELECT too (scsi_mode_select.c).
 */
#include <string.h>

#include "protocols/scsi/scsi_internal.h"

#define ASC_SAVING_NOT_SUPPORTED 0x39, 0x00

enum { PAGES_CURRENT, PAGES_CHANGEABLE, PAGES_DEFAULT, PAGES_SAVED };

static size_t page_error_recovery(uint8_t *out, bool changeable)
{
    out[0] = 0x01;
    out[1] = 0x0a;
    (void)changeable;
    return 12;
}

static size_t page_caching(const struct scsi_lun *lun, uint8_t *out, bool changeable)
{
    out[0] = 0x08;
    out[1] = 0x12;
    if (!changeable && lun->write_cache)
        out[2] = 0x04; /* WCE: writes may sit in a volatile cache until SYNCHRONIZE CACHE */
    return 20;
}

static size_t page_control(uint8_t *out, bool changeable)
{
    out[0] = 0x0a;
    out[1] = 0x0a;
    if (!changeable)
        store_be16(out + 8, 0xffff); /* busy timeout period: unlimited */
    return 12;
}

size_t scsi_mode_page(const struct scsi_lun *lun, uint8_t page, bool changeable, uint8_t *out)
{
    memset(out, 0, SCSI_MODE_PAGE_MAX);
    switch (page) {
    case 0x01: return page_error_recovery(out, changeable);
    case 0x08: return page_caching(lun, out, changeable);
    case 0x0a: return page_control(out, changeable);
    default: return 0;
    }
}

void scsi_mode_sense(struct scsi_task *task)
{
    const struct scsi_lun *lun = task->lun;
    bool ten = task->cdb[0] == 0x5a;
    bool no_descriptor = task->cdb[1] & 0x08;
    unsigned control = task->cdb[2] >> 6, page = task->cdb[2] & 0x3f, subpage = task->cdb[3];
    size_t allocation = ten ? load_be16(task->cdb + 7) : task->cdb[4];
    if (control == PAGES_SAVED) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_SAVING_NOT_SUPPORTED);
        return;
    }
    if (subpage != 0 && subpage != 0xff) {
        scsi_task_invalid_field(task, 3, -1);
        return;
    }
    uint8_t answer[256] = {0};
    size_t header = ten ? 8 : 4, at = header;
    bool changeable = control == PAGES_CHANGEABLE;
    /* Device-specific parameter: WP for a read-only LUN, DPOFUA (FUA and DPO are honoured). */
    answer[ten ? 3 : 2] = (uint8_t)((lun->readonly ? 0x80 : 0) | 0x10);
    if (!no_descriptor) {
        uint8_t *descriptor = answer + at;
        uint64_t blocks = scsi_lun_blocks(lun);
        store_be32(descriptor, blocks > 0xffffffffu ? 0xffffffffu : (uint32_t)blocks);
        store_be32(descriptor + 4, lun->block_size & 0xffffff);
        at += 8;
        answer[ten ? 7 : 3] = 8; /* block descriptor length */
    }
    static const uint8_t pages[] = {0x01, 0x08, 0x0a}; /* ascending, as "all pages" returns them */
    for (size_t i = 0; i < sizeof(pages); i++)
        if (page == 0x3f || page == pages[i])
            at += scsi_mode_page(lun, pages[i], changeable, answer + at);
    if (at == header + (no_descriptor ? 0 : 8)) {
        scsi_task_invalid_field(task, 2, 5); /* no such page */
        return;
    }
    if (ten)
        store_be16(answer, (uint16_t)(at - 2));
    else
        answer[0] = (uint8_t)(at - 1);
    scsi_task_reply(task, answer, allocation < at ? allocation : at);
}
