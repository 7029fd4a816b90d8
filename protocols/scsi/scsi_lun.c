/*
 * The logical unit: its state, answering tasks, and the command table
 * that dispatches CDBs (with the commands that need no I/O).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/scsi/scsi_internal.h"

/* ---- answering ---- */

void scsi_task_good(struct scsi_task *task, size_t data_in_length)
{
    task->status = SCSI_STATUS_GOOD;
    task->sense_length = 0;
    task->data_in_length = data_in_length;
    if (task->data_in_wanted < data_in_length)
        task->data_in_wanted = data_in_length;
    task->complete(task);
}

static void sense_fill(struct scsi_task *task, uint8_t key, uint8_t asc, uint8_t ascq)
{
    memset(task->sense, 0, sizeof(task->sense));
    task->sense[0] = 0x70; /* current error, fixed format */
    task->sense[2] = key;
    task->sense[7] = SCSI_SENSE_MAX - 8; /* additional sense length */
    task->sense[12] = asc;
    task->sense[13] = ascq;
    task->sense_length = SCSI_SENSE_MAX;
    task->status = SCSI_STATUS_CHECK_CONDITION;
    task->data_in_length = 0;
    task->data_in_wanted = 0;
}

void scsi_task_check(struct scsi_task *task, uint8_t key, uint8_t asc, uint8_t ascq)
{
    sense_fill(task, key, asc, ascq);
    task->complete(task);
}

void scsi_task_invalid_field(struct scsi_task *task, unsigned byte, int bit)
{
    sense_fill(task, SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
    /* Sense-key specific: SKSV, C/D (the CDB), BPV and the bit, then the byte. */
    task->sense[15] = 0x80 | 0x40 | (bit >= 0 ? 0x08 | (uint8_t)(bit & 7) : 0);
    store_be16(task->sense + 16, (uint16_t)byte);
    task->complete(task);
}

void scsi_task_errno(struct scsi_task *task, int error, bool write)
{
    switch (error) {
    case -EROFS: scsi_task_check(task, SENSE_DATA_PROTECT, ASC_WRITE_PROTECTED); return;
    case -EINVAL: scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE); return;
    case -ENOMEM: scsi_task_check(task, SENSE_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE); return;
    default:
        if (write)
            scsi_task_check(task, SENSE_MEDIUM_ERROR, ASC_WRITE_ERROR);
        else
            scsi_task_check(task, SENSE_MEDIUM_ERROR, ASC_UNRECOVERED_READ_ERROR);
    }
}

void scsi_task_reply(struct scsi_task *task, const uint8_t *answer, size_t length)
{
    size_t copied = length < task->data_in_capacity ? length : task->data_in_capacity;
    task->data_in_wanted = length;
    if (copied)
        memcpy(task->data_in, answer, copied);
    scsi_task_good(task, copied);
}

/* ---- commands without I/O ---- */

static void test_unit_ready(struct scsi_task *task) { scsi_task_good(task, 0); }

static void report_luns(struct scsi_task *task)
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

static void request_sense(struct scsi_task *task)
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

/* START STOP UNIT and PREVENT ALLOW MEDIUM REMOVAL: a disk that is always there accepts them. */
static void accepted(struct scsi_task *task) { scsi_task_good(task, 0); }

/* ---- dispatch ---- */

struct scsi_command {
    uint8_t opcode;
    void (*run)(struct scsi_task *task);
    bool without_attention; /* INQUIRY, REPORT LUNS, REQUEST SENSE: not held up by a unit attention */
};

static const struct scsi_command commands[] = {
    {0x00, test_unit_ready, false},        /* TEST UNIT READY */
    {0x03, request_sense, true},           /* REQUEST SENSE */
    {0x08, scsi_read_write, false},        /* READ(6) */
    {0x0a, scsi_read_write, false},        /* WRITE(6) */
    {0x12, scsi_inquiry, true},            /* INQUIRY */
    {0x1a, scsi_mode_sense, false},        /* MODE SENSE(6) */
    {0x1b, accepted, false},               /* START STOP UNIT */
    {0x1e, accepted, false},               /* PREVENT ALLOW MEDIUM REMOVAL */
    {0x25, scsi_read_capacity10, false},   /* READ CAPACITY(10) */
    {0x28, scsi_read_write, false},        /* READ(10) */
    {0x2a, scsi_read_write, false},        /* WRITE(10) */
    {0x35, scsi_synchronize_cache, false}, /* SYNCHRONIZE CACHE(10) */
    {0x41, scsi_write_same, false},        /* WRITE SAME(10) */
    {0x42, scsi_unmap, false},             /* UNMAP */
    {0x5a, scsi_mode_sense, false},        /* MODE SENSE(10) */
    {0x88, scsi_read_write, false},        /* READ(16) */
    {0x8a, scsi_read_write, false},        /* WRITE(16) */
    {0x91, scsi_synchronize_cache, false}, /* SYNCHRONIZE CACHE(16) */
    {0x93, scsi_write_same, false},        /* WRITE SAME(16) */
    {0x9e, scsi_service_action_in16, false}, /* READ CAPACITY(16), GET LBA STATUS */
    {0xa0, report_luns, true},             /* REPORT LUNS */
    {0xa8, scsi_read_write, false},        /* READ(12) */
    {0xaa, scsi_read_write, false},        /* WRITE(12) */
};

static const struct scsi_command *command_find(uint8_t opcode)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (commands[i].opcode == opcode)
            return &commands[i];
    return NULL;
}

/* True the first time a nexus addresses the LUN: it is owed the power-on unit attention. */
static bool attention_due(struct scsi_lun *lun, const char *nexus)
{
    if (!nexus)
        return false;
    pthread_mutex_lock(&lun->lock);
    bool due = true;
    for (size_t i = 0; i < lun->attended_count && due; i++)
        due = strcmp(lun->attended[i], nexus) != 0;
    if (due) {
        char **grown = realloc(lun->attended, (lun->attended_count + 1) * sizeof(*grown));
        char *copy = strdup(nexus);
        if (grown && copy) {
            lun->attended = grown;
            lun->attended[lun->attended_count++] = copy;
        } else {
            if (grown)
                lun->attended = grown;
            free(copy);
            due = false; /* out of memory: better no attention than one every time */
        }
    }
    pthread_mutex_unlock(&lun->lock);
    return due;
}

void scsi_task_execute(struct scsi_task *task)
{
    task->status = SCSI_STATUS_GOOD;
    task->sense_length = 0;
    task->data_in_length = 0;
    task->data_in_wanted = 0;
    task->data_out_wanted = 0;
    task->progress = 0;
    const struct scsi_command *command = command_find(task->cdb[0]);
    if (!task->lun) {
        /* An absent LUN still answers INQUIRY (peripheral qualifier 3) and REPORT LUNS. */
        if (task->cdb[0] == 0x12) {
            uint8_t answer[36] = {0x7f};
            scsi_task_reply(task, answer, task->cdb[4] < sizeof(answer) ? task->cdb[4] : sizeof(answer));
        } else if (task->cdb[0] == 0xa0) {
            report_luns(task);
        } else {
            scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED);
        }
        return;
    }
    if (!command) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
        return;
    }
    if (!command->without_attention && attention_due(task->lun, task->nexus)) {
        scsi_task_check(task, SENSE_UNIT_ATTENTION, ASC_POWER_ON_RESET);
        return;
    }
    command->run(task);
}

/* ---- the LUN ---- */

static void copy_padded(char *out, size_t size, const char *text, const char *fallback)
{
    snprintf(out, size, "%s", text && *text ? text : fallback);
}

int scsi_lun_create(const struct scsi_lun_options *options, struct scsi_lun **out)
{
    struct scsi_lun *lun = calloc(1, sizeof(*lun));
    if (!lun)
        return -ENOMEM;
    struct bdev *bdev = options->bdev;
    lun->bdev = bdev;
    lun->readonly = options->readonly || bdev_is_read_only(bdev);
    lun->write_cache = options->write_cache;
    lun->thin = (bdev->caps & BDEV_CAP_DISCARD) != 0;
    lun->unmapped_zero = (bdev->caps & BDEV_CAP_DISCARD_ZEROES) != 0;
    lun->block_size = bdev->limits.logical_block_size >= 512 ? bdev->limits.logical_block_size : 512;
    lun->blocks = bdev->size / lun->block_size;
    copy_padded(lun->vendor, sizeof(lun->vendor), options->vendor, "LUNA");
    copy_padded(lun->product, sizeof(lun->product), options->product, "lunad");
    copy_padded(lun->revision, sizeof(lun->revision), options->revision, "0.1");
    lun->serial = strdup(options->serial && *options->serial ? options->serial : "0");
    lun->naa = options->naa;
    if (!lun->serial) {
        free(lun);
        return -ENOMEM;
    }
    pthread_mutex_init(&lun->lock, NULL);
    *out = lun;
    return 0;
}

void scsi_lun_destroy(struct scsi_lun *lun)
{
    if (!lun)
        return;
    for (size_t i = 0; i < lun->attended_count; i++)
        free(lun->attended[i]);
    free(lun->attended);
    free(lun->serial);
    pthread_mutex_destroy(&lun->lock);
    free(lun);
}
