/*
 * The logical unit: its state, answering tasks, and dispatching CDBs
 * through the command table (scsi_commands.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/scsi/scsi_internal.h"

/* ---- answering ---- */

/* The task is answered: whatever range it still holds is free for the writes waiting on it. */
static void finish(struct scsi_task *task)
{
    scsi_guard_leave(task);
    task->complete(task);
}

void scsi_task_good(struct scsi_task *task, size_t data_in_length)
{
    task->status = SCSI_STATUS_GOOD;
    task->sense_length = 0;
    task->data_in_length = data_in_length;
    if (task->data_in_wanted < data_in_length)
        task->data_in_wanted = data_in_length;
    finish(task);
}

void scsi_sense_set(struct scsi_task *task, uint8_t key, uint8_t asc, uint8_t ascq)
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

void scsi_task_conflict(struct scsi_task *task)
{
    task->status = SCSI_STATUS_RESERVATION_CONFLICT;
    task->sense_length = 0;
    task->data_in_length = 0;
    task->data_in_wanted = 0;
    finish(task);
}

void scsi_task_check(struct scsi_task *task, uint8_t key, uint8_t asc, uint8_t ascq)
{
    scsi_sense_set(task, key, asc, ascq);
    finish(task);
}

/* Sense-key specific field pointer (SPC-4 4.5.2.4.2): SKSV, C/D, BPV and the bit, then the byte. */
static void field_pointer(struct scsi_task *task, bool in_cdb, unsigned byte, int bit)
{
    task->sense[15] = 0x80 | (in_cdb ? 0x40 : 0) | (bit >= 0 ? 0x08 | (uint8_t)(bit & 7) : 0);
    store_be16(task->sense + 16, (uint16_t)byte);
}

void scsi_task_invalid_field(struct scsi_task *task, unsigned byte, int bit)
{
    scsi_sense_set(task, SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
    field_pointer(task, true, byte, bit);
    finish(task);
}

void scsi_task_invalid_parameter(struct scsi_task *task, unsigned byte, int bit)
{
    scsi_sense_set(task, SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAMETER_LIST);
    field_pointer(task, false, byte, bit);
    finish(task);
}

void scsi_task_miscompare(struct scsi_task *task, uint64_t offset)
{
    scsi_sense_set(task, SENSE_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY);
    if (offset <= UINT32_MAX) { /* fixed format has 4 bytes of INFORMATION; VALID says they are set */
        task->sense[0] |= 0x80;
        store_be32(task->sense + 3, (uint32_t)offset);
    }
    finish(task);
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

bool scsi_task_range_check(struct scsi_task *task, uint64_t lba, uint64_t blocks)
{
    uint64_t capacity = scsi_lun_blocks(task->lun);
    if (lba > capacity || blocks > capacity - lba) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        return false;
    }
    return true;
}

bool scsi_task_refuses_protection(struct scsi_task *task)
{
    if (!(task->cdb[1] & 0xe0))
        return false;
    scsi_task_invalid_field(task, 1, 7);
    return true;
}

bool scsi_task_refuses_write(struct scsi_task *task)
{
    if (!task->lun->readonly)
        return false;
    scsi_task_check(task, SENSE_DATA_PROTECT, ASC_WRITE_PROTECTED);
    return true;
}

void scsi_task_reply(struct scsi_task *task, const uint8_t *answer, size_t length)
{
    size_t copied = length < task->data_in_capacity ? length : task->data_in_capacity;
    task->data_in_wanted = length;
    if (copied)
        memcpy(task->data_in, answer, copied);
    scsi_task_good(task, copied);
}

/* ---- dispatch ---- */

/*
 * The table entry for the CDB: the one of its opcode and service action;
 * for an opcode whose service actions are all unknown, one of its entries
 * (the service action is refused after the unit attention, as before).
 */
static const struct scsi_command *command_find(const uint8_t *cdb)
{
    const struct scsi_command *found = NULL;
    for (size_t i = 0; i < scsi_command_count; i++) {
        const struct scsi_command *command = &scsi_commands[i];
        if (command->opcode != cdb[0])
            continue;
        if (!command->has_service_action || command->service_action == (cdb[1] & 0x1f))
            return command;
        found = command;
    }
    return found;
}

static struct scsi_nexus_state *nexus_find(struct scsi_lun *lun, const char *nexus)
{
    for (size_t i = 0; i < lun->nexus_count; i++)
        if (strcmp(lun->nexuses[i].nexus, nexus) == 0)
            return &lun->nexuses[i];
    return NULL;
}

void scsi_attention_raise(struct scsi_lun *lun, const char *nexus, enum scsi_attention attention)
{
    struct scsi_nexus_state *state = nexus_find(lun, nexus);
    if (state)
        state->attentions |= attention;
}

/*
 * The export grew (a reload followed its file or device): every nexus is
 * told CAPACITY DATA HAS CHANGED (SBC-3 §4.10), then READ CAPACITY gives
 * the new size.
 */
static void follow_capacity(struct scsi_lun *lun)
{
    pthread_mutex_lock(&lun->lock);
    uint64_t size = bdev_size(lun->bdev);
    if (size != lun->size_seen) {
        __atomic_store_n(&lun->size_seen, size, __ATOMIC_RELAXED);
        __atomic_store_n(&lun->blocks, size / lun->block_size, __ATOMIC_RELAXED);
        for (size_t i = 0; i < lun->nexus_count; i++)
            lun->nexuses[i].attentions |= SCSI_ATTENTION_CAPACITY_CHANGED;
    }
    pthread_mutex_unlock(&lun->lock);
}

/*
 * The unit attention nexus is owed now, taken (false: none): the power-on
 * one the first time it addresses the LUN, then whatever was raised for it.
 */
static bool attention_take(struct scsi_lun *lun, const char *nexus, uint8_t *asc, uint8_t *ascq)
{
    if (!nexus)
        return false;
    pthread_mutex_lock(&lun->lock);
    struct scsi_nexus_state *state = nexus_find(lun, nexus);
    if (!state) {
        struct scsi_nexus_state *grown = realloc(lun->nexuses, (lun->nexus_count + 1) * sizeof(*grown));
        char *copy = strdup(nexus);
        if (grown && copy) {
            lun->nexuses = grown;
            state = &lun->nexuses[lun->nexus_count++];
            *state = (struct scsi_nexus_state){.nexus = copy, .attentions = SCSI_ATTENTION_POWER_ON};
        } else {
            if (grown)
                lun->nexuses = grown;
            free(copy); /* out of memory: better no attention than one every time */
        }
    }
    static const struct {
        enum scsi_attention attention;
        uint8_t asc, ascq;
    } order[] = {
        {SCSI_ATTENTION_POWER_ON, ASC_POWER_ON_RESET},
        {SCSI_ATTENTION_RESERVATIONS_PREEMPTED, ASC_RESERVATIONS_PREEMPTED},
        {SCSI_ATTENTION_RESERVATIONS_RELEASED, ASC_RESERVATIONS_RELEASED},
        {SCSI_ATTENTION_REGISTRATIONS_PREEMPTED, ASC_REGISTRATIONS_PREEMPTED},
        {SCSI_ATTENTION_CAPACITY_CHANGED, ASC_CAPACITY_DATA_CHANGED},
    };
    bool due = false;
    for (size_t i = 0; state && state->attentions && i < sizeof(order) / sizeof(order[0]); i++) {
        if (state->attentions & order[i].attention) {
            state->attentions &= ~(unsigned)order[i].attention;
            *asc = order[i].asc;
            *ascq = order[i].ascq;
            due = true;
            break;
        }
    }
    pthread_mutex_unlock(&lun->lock);
    return due;
}

bool scsi_lun_has_reservations(struct scsi_lun *lun)
{
    pthread_mutex_lock(&lun->lock);
    bool has = lun->registration_count > 0 || lun->reserved;
    pthread_mutex_unlock(&lun->lock);
    return has;
}

void scsi_lun_nexus_lost(struct scsi_lun *lun, const char *nexus)
{
    if (!lun || !nexus)
        return;
    pthread_mutex_lock(&lun->lock);
    if (lun->legacy_holder && strcmp(lun->legacy_holder, nexus) == 0) {
        free(lun->legacy_holder);
        lun->legacy_holder = NULL;
    }
    scsi_reservations_changed(lun);
    pthread_mutex_unlock(&lun->lock);
}

void scsi_lun_reset(struct scsi_lun *lun, const char *nexus)
{
    if (!lun)
        return;
    pthread_mutex_lock(&lun->lock);
    free(lun->legacy_holder);
    lun->legacy_holder = NULL;
    scsi_reservations_changed(lun);
    /* Every other nexus is owed the reset's unit attention again (SAM-5 §5.11). */
    for (size_t i = 0; i < lun->nexus_count; i++)
        if (!nexus || strcmp(lun->nexuses[i].nexus, nexus) != 0)
            lun->nexuses[i].attentions |= SCSI_ATTENTION_POWER_ON;
    pthread_mutex_unlock(&lun->lock);
}

void scsi_task_execute(struct scsi_task *task)
{
    task->status = SCSI_STATUS_GOOD;
    task->sense_length = 0;
    task->data_in_length = 0;
    task->data_in_wanted = 0;
    task->data_out_wanted = 0;
    task->progress = 0;
    task->work = NULL;
    task->guard = NULL;
    if (!task->lun) {
        /* An absent LUN still answers INQUIRY (peripheral qualifier 3) and REPORT LUNS. */
        if (task->cdb[0] == 0x12) {
            uint8_t answer[36] = {0x7f};
            scsi_task_reply(task, answer, task->cdb[4] < sizeof(answer) ? task->cdb[4] : sizeof(answer));
        } else if (task->cdb[0] == 0xa0) {
            scsi_report_luns(task);
        } else {
            scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED);
        }
        return;
    }
    if (bdev_size(task->lun->bdev) != __atomic_load_n(&task->lun->size_seen, __ATOMIC_RELAXED))
        follow_capacity(task->lun);
    const struct scsi_command *command = command_find(task->cdb);
    if (!command) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
        return;
    }
    uint8_t asc, ascq;
    if (!command->without_attention && attention_take(task->lun, task->nexus, &asc, &ascq)) {
        scsi_task_check(task, SENSE_UNIT_ATTENTION, asc, ascq);
        return;
    }
    if (command->has_service_action && command->service_action != (task->cdb[1] & 0x1f)) {
        scsi_task_invalid_field(task, 1, 4); /* the opcode exists, not this service action */
        return;
    }
    if (scsi_reservation_conflict(task->lun, task->nexus, command->access)) {
        scsi_task_conflict(task);
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
    /* LBPRZ: UNMAP leaves zeroes, by a discard that zeroes or else by write_zeroes (scsi_rw.c). */
    lun->unmapped_zero = lun->thin && (bdev->caps & (BDEV_CAP_DISCARD_ZEROES | BDEV_CAP_WRITE_ZEROES)) != 0;
    lun->block_size = bdev->limits.logical_block_size >= 512 ? bdev->limits.logical_block_size : 512;
    lun->size_seen = bdev->size;
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
    if (options->persist && options->persist_key) {
        lun->persist = options->persist;
        if (!(lun->persist_key = strdup(options->persist_key))) {
            free(lun->serial);
            free(lun);
            return -ENOMEM;
        }
    }
    int rc = range_lock_init(&lun->own_writers);
    lun->writers = options->writers ? options->writers : &lun->own_writers;
    if (rc < 0) {
        free(lun->persist_key);
        free(lun->serial);
        free(lun);
        return rc;
    }
    pthread_mutex_init(&lun->lock, NULL);
    if ((rc = scsi_persist_restore(lun)) < 0) {
        scsi_lun_destroy(lun);
        return rc;
    }
    *out = lun;
    return 0;
}

void scsi_lun_destroy(struct scsi_lun *lun)
{
    if (!lun)
        return;
    for (size_t i = 0; i < lun->nexus_count; i++)
        free(lun->nexuses[i].nexus);
    free(lun->nexuses);
    scsi_copy_results_clear(lun);
    scsi_reservations_clear(lun);
    free(lun->registrations);
    free(lun->persist_key);
    free(lun->serial);
    range_lock_destroy(&lun->own_writers);
    pthread_mutex_destroy(&lun->lock);
    free(lun);
}
