/*
 * INQUIRY: standard data (SPC-4 direct-access block device) and the vital
 * product data pages initiators look for: 00 (the list), 80 (serial), 83
 * (device identification: NAA and T10 vendor id), B0 (block limits), B1
 * (block device characteristics), B2 (logical block provisioning).
 */
#include <string.h>

#include "protocols/scsi/scsi_internal.h"

static void put_padded(uint8_t *out, const char *text, size_t size)
{
    size_t length = strlen(text);
    memset(out, ' ', size);
    memcpy(out, text, length < size ? length : size);
}

#define STANDARD_LENGTH 74u /* up to the version descriptors */

static size_t standard_data(const struct scsi_lun *lun, uint8_t *out)
{
    /* Version descriptors (SPC-4 Table 149): the standards the LUN claims. */
    static const uint16_t versions[] = {0x00a0 /* SAM-5 */, 0x0460 /* SPC-4 */, 0x04c0 /* SBC-3 */,
                                        0x0960 /* iSCSI */};
    memset(out, 0, STANDARD_LENGTH);
    out[0] = 0x00;        /* peripheral qualifier 0, direct-access block device */
    out[2] = 0x06;        /* SPC-4 */
    out[3] = 0x12;        /* HISUP, response data format 2 */
    out[4] = STANDARD_LENGTH - 5; /* additional length */
    out[7] = 0x02;        /* CMDQUE */
    put_padded(out + 8, lun->vendor, 8);
    put_padded(out + 16, lun->product, 16);
    put_padded(out + 32, lun->revision, 4);
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
        store_be16(out + 58 + 2 * i, versions[i]);
    return STANDARD_LENGTH;
}

static size_t page_supported(uint8_t *out)
{
    static const uint8_t pages[] = {0x00, 0x80, 0x83, 0x86, 0x8f, 0xb0, 0xb1, 0xb2};
    out[1] = 0x00;
    store_be16(out + 2, sizeof(pages));
    memcpy(out + 4, pages, sizeof(pages));
    return 4 + sizeof(pages);
}

static size_t page_serial(const struct scsi_lun *lun, uint8_t *out)
{
    size_t length = strlen(lun->serial);
    if (length > 200)
        length = 200;
    out[1] = 0x80;
    store_be16(out + 2, (uint16_t)length);
    memcpy(out + 4, lun->serial, length);
    return 4 + length;
}

static size_t page_identification(const struct scsi_lun *lun, uint8_t *out)
{
    out[1] = 0x83;
    size_t at = 4;
    /* NAA IEEE Registered (5): the caller's identifier under the NAA nibble. */
    out[at] = 0x01;                                  /* protocol 0, code set binary */
    out[at + 1] = 0x03;                              /* association: LU, type NAA */
    out[at + 3] = 8;
    store_be64(out + at + 4, (UINT64_C(5) << 60) | (lun->naa & UINT64_C(0x0fffffffffffffff)));
    at += 12;
    /* T10 vendor id: vendor, then the serial. */
    size_t serial = strlen(lun->serial);
    if (serial > 100)
        serial = 100;
    out[at] = 0x02;                                  /* code set ASCII */
    out[at + 1] = 0x01;                              /* association: LU, type T10 vendor id */
    out[at + 3] = (uint8_t)(8 + serial);
    put_padded(out + at + 4, lun->vendor, 8);
    memcpy(out + at + 12, lun->serial, serial);
    at += 12 + serial;
    store_be16(out + 2, (uint16_t)(at - 4));
    return at;
}

bool scsi_lun_has_designator(const struct scsi_lun *lun, const uint8_t *designator)
{
    uint8_t page[4 + 12 + 12 + 100];
    size_t length = page_identification(lun, page);
    for (size_t at = 4; at + 4 <= length; at += 4 + page[at + 3]) {
        const uint8_t *ours = page + at;
        if ((ours[0] & 0x0f) == (designator[0] & 0x0f) && (ours[1] & 0x0f) == (designator[1] & 0x0f) &&
            ours[3] == designator[3] && memcmp(ours + 4, designator + 4, ours[3]) == 0)
            return true;
    }
    return false;
}

/*
 * Extended INQUIRY Data (SPC-4 §7.8.7): every task is run as a SIMPLE one
 * (SIMPSUP), the volatile cache is there when the cache mode has one
 * (V_SUP), unit attentions are per logical unit (LUICLR), and sense data
 * is at most SCSI_SENSE_MAX bytes.  No protection information.
 */
static size_t page_extended_inquiry(const struct scsi_lun *lun, uint8_t *out)
{
    out[1] = 0x86;
    store_be16(out + 2, 0x3c);
    out[5] = 0x01;                       /* SIMPSUP */
    out[6] = lun->write_cache ? 0x01 : 0; /* V_SUP */
    out[7] = 0x01;                       /* LUICLR */
    out[13] = SCSI_SENSE_MAX;            /* maximum supported sense data length */
    return 4 + 0x3c;
}

/*
 * Third-party copy (SPC-4 §7.8.17): the Supported Commands descriptor,
 * EXTENDED COPY (LID1) and RECEIVE COPY RESULTS with their service actions.
 */
static size_t page_third_party_copy(uint8_t *out)
{
    static const uint8_t commands[] = {0x83, 1, 0x00, 0x84, 2, 0x00, 0x03};
    out[1] = 0x8f;
    uint8_t *descriptor = out + 4;
    size_t length = (1 + sizeof(commands) + 3) & ~(size_t)3; /* padded to 4 bytes */
    memset(descriptor, 0, 4 + length);
    store_be16(descriptor, 0x0001);
    store_be16(descriptor + 2, (uint16_t)length);
    descriptor[4] = sizeof(commands);
    memcpy(descriptor + 5, commands, sizeof(commands));
    store_be16(out + 2, (uint16_t)(4 + length));
    return 4 + 4 + length;
}

static size_t page_block_limits(const struct scsi_lun *lun, uint8_t *out)
{
    out[1] = 0xb0;
    store_be16(out + 2, 0x3c);
    /* WSNZ 0: WRITE SAME with zero blocks writes to the last LBA (up to the maximum write same length). */
    out[5] = (uint8_t)scsi_max_compare_and_write(lun); /* maximum COMPARE AND WRITE length */
    const struct bdev_limits *limits = &lun->bdev->limits;
    uint32_t preferred = limits->physical_block_size / lun->block_size;
    store_be16(out + 6, (uint16_t)(preferred ? preferred : 1));        /* optimal transfer length granularity */
    store_be32(out + 8, limits->max_transfer / lun->block_size);        /* maximum transfer length */
    uint32_t optimal = limits->optimal_io_size ? limits->optimal_io_size : limits->physical_block_size;
    store_be32(out + 12, optimal / lun->block_size);                    /* optimal transfer length */
    if (lun->thin) {
        store_be32(out + 20, MAX_UNMAP_BLOCKS);                         /* maximum unmap LBA count */
        store_be32(out + 24, MAX_UNMAP_DESCRIPTORS);                    /* maximum unmap descriptors */
        store_be32(out + 28, preferred ? preferred : 1);                /* optimal unmap granularity */
    }
    store_be64(out + 36, MAX_UNMAP_BLOCKS);                             /* maximum write same length */
    return 4 + 0x3c;
}

static size_t page_characteristics(uint8_t *out)
{
    out[1] = 0xb1;
    store_be16(out + 2, 0x3c);
    store_be16(out + 4, 1); /* medium rotation rate: non-rotating */
    return 4 + 0x3c;
}

static size_t page_provisioning(const struct scsi_lun *lun, uint8_t *out)
{
    out[1] = 0xb2;
    store_be16(out + 2, 4);
    if (lun->thin) {
        out[5] = 0x80 | 0x40 | 0x20 | (lun->unmapped_zero ? 0x04 : 0); /* LBPU, LBPWS, LBPWS10, LBPRZ */
        out[6] = 0x02;                                                  /* thin provisioned */
    }
    return 8;
}

void scsi_inquiry(struct scsi_task *task)
{
    const struct scsi_lun *lun = task->lun;
    uint8_t answer[512] = {0};
    bool vital = task->cdb[1] & 0x01;
    uint8_t page = task->cdb[2];
    size_t allocation = load_be16(task->cdb + 3), length;
    if (task->cdb[1] & 0xfe) {
        scsi_task_invalid_field(task, 1, -1);
        return;
    }
    if (!vital) {
        if (page) {
            scsi_task_invalid_field(task, 2, -1);
            return;
        }
        length = standard_data(lun, answer);
    } else {
        switch (page) {
        case 0x00: length = page_supported(answer); break;
        case 0x80: length = page_serial(lun, answer); break;
        case 0x83: length = page_identification(lun, answer); break;
        case 0x86: length = page_extended_inquiry(lun, answer); break;
        case 0x8f: length = page_third_party_copy(answer); break;
        case 0xb0: length = page_block_limits(lun, answer); break;
        case 0xb1: length = page_characteristics(answer); break;
        case 0xb2: length = page_provisioning(lun, answer); break;
        default: scsi_task_invalid_field(task, 2, -1); return;
        }
    }
    scsi_task_reply(task, answer, allocation < length ? allocation : length);
}
