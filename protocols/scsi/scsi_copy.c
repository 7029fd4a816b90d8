/*
 * Third-party copy inside the LUN (SPC-4 EXTENDED COPY (LID1) and RECEIVE
 * COPY RESULTS): the initiator names source and destination blocks, the
 * target moves the data without it crossing the network, as VMware's
 * clone offload (VAAI XCOPY) uses it.
 *
 * Offered: identification CSCD descriptors (E4h) naming this LUN by a
 * designator of its Device Identification page, and block-to-block
 * segment descriptors (02h).  A descriptor naming another logical unit is
 * not reachable (COPY ABORTED); inline and held data are not offered.  The
 * copy runs segment after segment, MiB by MiB, each destination range held
 * in the LUN's write guard like a WRITE; the command is answered once all
 * of it is written.  COPY STATUS reports the last copies per list
 * identifier.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/scsi/scsi_internal.h"

#define PARAMETER_HEADER 16
#define CSCD_IDENTIFICATION 0xe4
#define CSCD_LENGTH 32
#define SEGMENT_BLOCK_TO_BLOCK 0x02
#define SEGMENT_LENGTH 28
#define MAX_CSCD_DESCRIPTORS 2
#define MAX_SEGMENT_DESCRIPTORS 8
#define MAX_DESCRIPTOR_LIST_LENGTH 1024
#define COPY_CHUNK (1u << 20)
#define LIST_ID_NOT_HELD 3 /* LIST ID USAGE 11b: no list identifier to remember */

#define ASC_TOO_MANY_CSCD_DESCRIPTORS 0x26, 0x06
#define ASC_UNSUPPORTED_CSCD_TYPE 0x26, 0x07
#define ASC_TOO_MANY_SEGMENT_DESCRIPTORS 0x26, 0x08
#define ASC_UNSUPPORTED_SEGMENT_TYPE 0x26, 0x09
#define ASC_COPY_TARGET_NOT_REACHABLE 0x0d, 0x02
#define ASC_NO_ADDITIONAL_SENSE 0x00, 0x00
#define SENSE_COPY_ABORTED 0x0a

/* One segment, decoded. */
struct copy_segment {
    uint64_t source, destination; /* LBAs */
    uint32_t blocks;
};

/* A running EXTENDED COPY: the task's work. */
struct copy_job {
    struct copy_segment segments[MAX_SEGMENT_DESCRIPTORS];
    unsigned count, current;
    uint32_t done;     /* blocks of the current segment copied */
    uint64_t copied;   /* blocks of every segment */
    uint8_t list_id;
    bool held;         /* the list identifier's result is kept for COPY STATUS */
    uint8_t *buffer;
};

static void copy_abort(struct scsi_task *task, uint8_t asc, uint8_t ascq)
{
    scsi_task_check(task, SENSE_COPY_ABORTED, asc, ascq);
}

/* Remember how a held list identifier's copy ended (under the LUN's lock). */
static void record_result(struct scsi_task *task, const struct copy_job *job, uint8_t status)
{
    struct scsi_lun *lun = task->lun;
    pthread_mutex_lock(&lun->lock);
    struct scsi_copy_result *slot = NULL;
    for (size_t i = 0; i < SCSI_COPY_RESULTS && !slot; i++)
        if (lun->copy_results[i].nexus && lun->copy_results[i].list_id == job->list_id &&
            strcmp(lun->copy_results[i].nexus, task->nexus) == 0)
            slot = &lun->copy_results[i];
    if (!slot) {
        slot = &lun->copy_results[lun->copy_result_next++ % SCSI_COPY_RESULTS];
        free(slot->nexus);
        slot->nexus = strdup(task->nexus);
    }
    slot->list_id = job->list_id;
    slot->status = status;
    slot->segments = (uint16_t)job->current;
    slot->kibibytes = (uint32_t)(job->copied * lun->block_size / 1024);
    pthread_mutex_unlock(&lun->lock);
}

static void job_finish(struct scsi_task *task, struct copy_job *job, int error)
{
    if (job->held && task->nexus)
        record_result(task, job, error ? 0x02 : 0x01); /* completed with, without errors */
    free(job->buffer);
    free(job);
    task->work = NULL;
    if (error)
        scsi_task_check(task, SENSE_COPY_ABORTED, error == -EROFS ? 0x27 : 0x0c, 0x00);
    else
        scsi_task_good(task, 0);
}

static void copy_next(struct scsi_task *task);

static void chunk_written(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    struct copy_job *job = task->work;
    if (io->result < 0) {
        job_finish(task, job, io->result);
        return;
    }
    uint32_t blocks = (uint32_t)(io->length / task->lun->block_size);
    job->done += blocks;
    job->copied += blocks;
    copy_next(task);
}

static void chunk_read(struct bdev_io *io)
{
    struct scsi_task *task = io->opaque;
    struct copy_job *job = task->work;
    if (io->result < 0) {
        job_finish(task, job, io->result);
        return;
    }
    const struct copy_segment *segment = &job->segments[job->current];
    uint64_t offset = (segment->destination + job->done) * task->lun->block_size;
    scsi_task_submit_io(task, BDEV_OP_WRITE, 0, offset, io->length, job->buffer, chunk_written);
}

/* The destination range is held: copy the current segment's next chunk. */
static void copy_chunk(struct scsi_task *task)
{
    struct copy_job *job = task->work;
    const struct copy_segment *segment = &job->segments[job->current];
    uint32_t block_size = task->lun->block_size;
    uint64_t blocks = segment->blocks - job->done;
    if (blocks * block_size > COPY_CHUNK)
        blocks = COPY_CHUNK / block_size;
    scsi_task_submit_io(task, BDEV_OP_READ, 0, (segment->source + job->done) * block_size, blocks * block_size,
                        job->buffer, chunk_read);
}

static void copy_next(struct scsi_task *task)
{
    struct copy_job *job = task->work;
    if (job->current < job->count && job->done == job->segments[job->current].blocks) {
        scsi_guard_leave(task);
        job->current++;
        job->done = 0;
    }
    while (job->current < job->count && job->segments[job->current].blocks == 0)
        job->current++;
    if (job->current == job->count) {
        job_finish(task, job, 0);
        return;
    }
    const struct copy_segment *segment = &job->segments[job->current];
    if (job->done == 0)
        scsi_guard_enter(task, segment->destination, segment->blocks, false, copy_chunk);
    else
        copy_chunk(task);
}

/* Does the CSCD descriptor at d name this LUN (a block device with its block size and designator)? */
static bool names_this_lun(const struct scsi_lun *lun, const uint8_t *d)
{
    uint32_t block_size = load_be24(d + 29);
    return (d[1] & 0x1f) == 0 && (block_size == 0 || block_size == lun->block_size) &&
           d[7] <= 20 && scsi_lun_has_designator(lun, d + 4);
}

/*
 * Check the parameter list and fill job.  false after answering the task
 * with what is wrong, as SPC-4 §6.4 orders the checks.
 */
static bool parse_parameters(struct scsi_task *task, struct copy_job *job)
{
    const uint8_t *p = task->data_out;
    size_t length = task->data_out_length;
    if (length < PARAMETER_HEADER) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
        return false;
    }
    uint32_t cscd_length = load_be16(p + 2), segment_length = load_be32(p + 8), inline_length = load_be32(p + 12);
    if ((uint64_t)cscd_length + segment_length > MAX_DESCRIPTOR_LIST_LENGTH ||
        PARAMETER_HEADER + (uint64_t)cscd_length + segment_length + inline_length > length) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
        return false;
    }
    if (inline_length) {
        scsi_task_invalid_parameter(task, 12, -1); /* no inline data is offered */
        return false;
    }
    job->list_id = p[0];
    job->held = ((p[1] >> 3) & 3) != LIST_ID_NOT_HELD;

    /* CSCD descriptors: which of them name this LUN. */
    bool reachable[MAX_CSCD_DESCRIPTORS] = {false};
    unsigned cscd_count = 0;
    for (uint32_t at = 0; at < cscd_length; at += CSCD_LENGTH, cscd_count++) {
        const uint8_t *d = p + PARAMETER_HEADER + at;
        if (d[0] != CSCD_IDENTIFICATION) {
            scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_UNSUPPORTED_CSCD_TYPE);
            return false;
        }
        if (cscd_count == MAX_CSCD_DESCRIPTORS) {
            scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_TOO_MANY_CSCD_DESCRIPTORS);
            return false;
        }
        if (at + CSCD_LENGTH > cscd_length) {
            scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
            return false;
        }
        reachable[cscd_count] = names_this_lun(task->lun, d);
    }

    /* Segment descriptors. */
    const uint8_t *segments = p + PARAMETER_HEADER + cscd_length;
    for (uint32_t at = 0; at < segment_length; at += SEGMENT_LENGTH) {
        const uint8_t *d = segments + at;
        if (d[0] != SEGMENT_BLOCK_TO_BLOCK) {
            scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_UNSUPPORTED_SEGMENT_TYPE);
            return false;
        }
        if (job->count == MAX_SEGMENT_DESCRIPTORS) {
            scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_TOO_MANY_SEGMENT_DESCRIPTORS);
            return false;
        }
        if (at + SEGMENT_LENGTH > segment_length || load_be16(d + 2) != SEGMENT_LENGTH - 4) {
            scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
            return false;
        }
        uint16_t source = load_be16(d + 4), destination = load_be16(d + 6);
        if (source >= cscd_count || destination >= cscd_count || !reachable[source] || !reachable[destination]) {
            copy_abort(task, ASC_COPY_TARGET_NOT_REACHABLE);
            return false;
        }
        struct copy_segment *segment = &job->segments[job->count++];
        segment->blocks = load_be16(d + 10);
        segment->source = load_be64(d + 12);
        segment->destination = load_be64(d + 20);
        uint64_t capacity = scsi_lun_blocks(task->lun);
        if (segment->source > capacity || segment->blocks > capacity - segment->source ||
            segment->destination > capacity || segment->blocks > capacity - segment->destination) {
            copy_abort(task, ASC_NO_ADDITIONAL_SENSE); /* the segment reaches past the end of the LUN */
            return false;
        }
    }
    return true;
}

void scsi_extended_copy(struct scsi_task *task)
{
    uint32_t length = load_be32(task->cdb + 10);
    task->data_out_wanted = length;
    if (length == 0) {
        scsi_task_good(task, 0); /* nothing to copy: not an error */
        return;
    }
    if (task->data_out_length < length) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
        return;
    }
    struct copy_job *job = calloc(1, sizeof(*job));
    if (!job) {
        scsi_task_errno(task, -ENOMEM, true);
        return;
    }
    if (!parse_parameters(task, job)) {
        free(job);
        return;
    }
    if (job->count && scsi_task_refuses_write(task)) {
        free(job);
        return;
    }
    uint32_t chunk = COPY_CHUNK < task->lun->bdev->limits.max_transfer ? COPY_CHUNK : task->lun->bdev->limits.max_transfer;
    if (job->count && !(job->buffer = malloc(chunk))) {
        free(job);
        scsi_task_errno(task, -ENOMEM, true);
        return;
    }
    task->work = job;
    copy_next(task);
}

/* ---- RECEIVE COPY RESULTS ---- */

static size_t operating_parameters(const struct scsi_lun *lun, uint8_t *out)
{
    memset(out, 0, 46);
    store_be32(out, 46 - 4);
    out[4] = 0x01;                                     /* SNLID: list ID usage 11b is accepted */
    store_be16(out + 8, MAX_CSCD_DESCRIPTORS);
    store_be16(out + 10, MAX_SEGMENT_DESCRIPTORS);
    store_be32(out + 12, MAX_DESCRIPTOR_LIST_LENGTH);
    store_be32(out + 16, 0xffffu * lun->block_size);   /* a block-to-block segment's most blocks */
    store_be16(out + 34, 1);                           /* total concurrent copies */
    out[36] = 1;                                       /* maximum concurrent copies */
    out[37] = 9;                                       /* data segment granularity: 512 */
    out[43] = 2;                                       /* implemented descriptor types: */
    out[44] = SEGMENT_BLOCK_TO_BLOCK;
    out[45] = CSCD_IDENTIFICATION;
    return 46;
}

void scsi_receive_copy_results(struct scsi_task *task)
{
    struct scsi_lun *lun = task->lun;
    uint8_t answer[64];
    size_t length = 0;
    uint32_t allocation = load_be32(task->cdb + 10);
    switch (task->cdb[1] & 0x1f) {
    case 0x03: /* OPERATING PARAMETERS */
        length = operating_parameters(lun, answer);
        break;
    case 0x00: { /* COPY STATUS of a held list identifier */
        bool found = false;
        pthread_mutex_lock(&lun->lock);
        for (size_t i = 0; i < SCSI_COPY_RESULTS && !found; i++) {
            const struct scsi_copy_result *result = &lun->copy_results[i];
            if (result->nexus && task->nexus && result->list_id == task->cdb[2] &&
                strcmp(result->nexus, task->nexus) == 0) {
                found = true;
                memset(answer, 0, 12);
                store_be32(answer, 8);
                answer[4] = result->status;
                store_be16(answer + 5, result->segments);
                answer[7] = 0x01; /* transfer count in KiB */
                store_be32(answer + 8, result->kibibytes);
                length = 12;
            }
        }
        pthread_mutex_unlock(&lun->lock);
        if (!found) {
            scsi_task_invalid_field(task, 2, -1); /* no copy with this list identifier */
            return;
        }
        break;
    }
    default:
        scsi_task_invalid_field(task, 1, 4);
        return;
    }
    scsi_task_reply(task, answer, allocation < length ? allocation : length);
}

void scsi_copy_results_clear(struct scsi_lun *lun)
{
    for (size_t i = 0; i < SCSI_COPY_RESULTS; i++) {
        free(lun->copy_results[i].nexus);
        lun->copy_results[i].nexus = NULL;
    }
}
