/*
 * img_copy: the copy engine of `luna-img convert` (see img_copy.h).
 *
 * The sources are walked in ranges, as qemu-img convert walks them: a range
 * never crosses a source, never mixes a zero extent (block_status) with
 * data, is at most IMG_COPY_CHUNK long and, where it can be, ends on a
 * target cluster boundary so that no write allocates part of a cluster.
 * Each range goes to a slot (one per request in flight) that reads it,
 * waits for its turn when writes are in order, then writes what must be
 * written, a run at a time.  Block status is fetched ahead, 64 extents per
 * request, by one request at a time.
 */
#include "block/img/img_copy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "block/aio.h"
#include "block/bdev.h"

#define STATUS_EXTENTS 64
#define STATUS_SPAN (1ull << 30) /* bytes asked per block_status request */
#define ZERO_SPAN (1ull << 30)   /* bytes per write_zeroes of a zero range */
#define BUFFER_ALIGNMENT 4096    /* enough for O_DIRECT (cache=none) */

enum range_kind {
    RANGE_SKIP,   /* reads zeroes and the target does already: nothing to do */
    RANGE_ZEROES, /* reads zeroes: one write_zeroes */
    RANGE_DATA,   /* read (or zeroed in the buffer), then written run by run */
};

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_WAITING, SLOT_WRITING };

enum run_kind { RUN_SKIP, RUN_ZERO, RUN_DATA, RUN_COMPRESSED };

struct img_copy;

struct slot {
    struct img_copy *copy;
    enum slot_state state;
    enum range_kind kind;
    uint64_t start, end;   /* virtual offsets: the sources end to end */
    size_t source;
    bool source_zero;      /* RANGE_DATA of a zero extent: the buffer is zeroed, not read */
    uint64_t counted;      /* bytes this range adds to the progress */
    unsigned reads;        /* reads in flight */
    uint64_t scan;         /* writing: first byte not yet handled */
    uint8_t *buffer;
    uint8_t *target_buffer; /* compare_target: what the target reads now */
    struct bdev_io io, target_io;
    struct iovec iov, target_iov;
};

struct img_copy {
    struct aio_context *ctx;
    struct img_copy_options o;
    struct bdev **sources;
    uint64_t *starts;      /* virtual offset of each source */
    uint64_t total;
    uint64_t chunk;
    uint64_t alignment;    /* target cluster (qcow2) or sector */
    img_copy_done_fn *done;
    void *opaque;
    struct slot slots[IMG_COPY_MAX_PARALLEL];
    uint32_t slot_count;

    /* Block status: the cached extents of one source, [cache_start, cache_end). */
    size_t cache_source;
    uint64_t cache_start, cache_end;
    struct bdev_extent cache[STATUS_EXTENTS];
    uint32_t cache_count;
    bool status_busy;
    struct bdev_io status_io;
    struct bdev_extent status_extents[STATUS_EXTENTS];
    uint64_t status_offset;
    size_t status_source;

    bool scanning;         /* first pass: count the bytes to copy, for the progress */
    uint64_t scan_next;
    uint64_t to_copy, copied;

    uint64_t next;         /* the next virtual offset to hand to a slot */
    uint64_t write_cursor; /* in-order writes: where the next write must start */
    bool in_pump, pump_again, flushing, finished;
    struct bdev_io flush_io;
    int error;
    char message[256];
};

static void pump(struct img_copy *c);

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t align_down(uint64_t v, uint64_t a) { return v / a * a; }
static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static bool is_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static void fail(struct img_copy *c, int rc, const char *what, uint64_t offset)
{
    if (c->error)
        return;
    c->error = rc;
    snprintf(c->message, sizeof(c->message), "error while %s %" PRIu64 ": %s", what, offset, strerror(-rc));
}

static size_t source_of(const struct img_copy *c, uint64_t offset)
{
    size_t s = 0;
    while (offset >= c->starts[s] + c->sources[s]->size)
        s++;
    return s;
}

/* The cached extent holding local offset `local` of source s; false when not cached. */
static bool status_at(const struct img_copy *c, size_t s, uint64_t local, uint32_t *flags, uint64_t *end)
{
    if (s != c->cache_source || local < c->cache_start || local >= c->cache_end)
        return false;
    uint64_t at = c->cache_start;
    for (uint32_t i = 0; i < c->cache_count; i++) {
        if (local < at + c->cache[i].length) {
            *flags = c->cache[i].flags;
            *end = at + c->cache[i].length;
            return true;
        }
        at += c->cache[i].length;
    }
    return false;
}

static void status_done(struct bdev_io *io)
{
    struct img_copy *c = io->opaque;
    c->status_busy = false;
    if (io->result < 0) {
        fail(c, io->result, "reading block status at offset", c->starts[c->status_source] + c->status_offset);
    } else {
        c->cache_source = c->status_source;
        c->cache_start = c->status_offset;
        c->cache_count = io->nr_extents;
        uint64_t end = c->status_offset;
        for (uint32_t i = 0; i < io->nr_extents; i++) {
            c->cache[i] = c->status_extents[i];
            end += c->status_extents[i].length;
        }
        c->cache_end = end;
        if (end == c->status_offset)
            fail(c, -EIO, "reading block status at offset", c->starts[c->status_source] + c->status_offset);
    }
    pump(c);
}

static void fetch_status(struct img_copy *c, size_t s, uint64_t local)
{
    struct bdev *bdev = c->sources[s];
    c->status_busy = true;
    c->status_source = s;
    c->status_offset = local;
    c->status_io = (struct bdev_io){
        .op = BDEV_OP_BLOCK_STATUS,
        .offset = local,
        .length = min_u64(bdev->size - local, STATUS_SPAN),
        .extents = c->status_extents,
        .max_extents = STATUS_EXTENTS,
        .ctx = c->ctx,
        .complete = status_done,
        .opaque = c,
    };
    bdev_submit(bdev, &c->status_io);
}

/* ---- writing ---- */

static void write_next(struct slot *slot);

static void slot_finished(struct slot *slot)
{
    struct img_copy *c = slot->copy;
    slot->state = SLOT_FREE;
    if (!c->error && slot->counted) {
        c->copied += slot->counted;
        if (c->o.progress)
            c->o.progress(c->o.progress_opaque,
                          c->to_copy ? 100.0 * (double)c->copied / (double)c->to_copy : 100.0);
    }
    if (!c->o.out_of_order && !c->error) {
        c->write_cursor = slot->end;
        for (uint32_t i = 0; i < c->slot_count; i++) {
            struct slot *waiting = &c->slots[i];
            if (waiting->state == SLOT_WAITING && waiting->start == c->write_cursor) {
                waiting->state = SLOT_WRITING;
                waiting->scan = waiting->start;
                write_next(waiting);
                break;
            }
        }
    }
    pump(c);
}

static void write_done(struct bdev_io *io)
{
    struct slot *slot = io->opaque;
    if (io->result < 0)
        fail(slot->copy, io->result, "writing at byte", io->offset);
    write_next(slot);
}

/* What to do with [offset, end) of the slot's buffer. */
static enum run_kind classify(const struct slot *slot, uint64_t offset, uint64_t end, uint64_t unit)
{
    const struct img_copy *c = slot->copy;
    const uint8_t *p = slot->buffer + (offset - slot->start);
    size_t n = (size_t)(end - offset);
    bool can_zero = (c->o.target->caps & BDEV_CAP_WRITE_ZEROES) != 0;
    if (c->o.compare_target) {
        if (!memcmp(p, slot->target_buffer + (offset - slot->start), n))
            return RUN_SKIP;
        return can_zero && is_zero(p, n) ? RUN_ZERO : RUN_DATA;
    }
    bool whole = n == unit && offset % unit == 0;
    if (c->o.min_sparse || c->o.compress) {
        if (slot->source_zero || is_zero(p, n))
            return c->o.target_reads_zero ? RUN_SKIP : can_zero ? RUN_ZERO : RUN_DATA;
    }
    return c->o.compress && whole ? RUN_COMPRESSED : RUN_DATA;
}

/* Write the slot's next run, or finish the slot. */
static void write_next(struct slot *slot)
{
    struct img_copy *c = slot->copy;
    if (c->error || slot->kind == RANGE_SKIP || slot->scan >= slot->end) {
        slot_finished(slot);
        return;
    }
    struct bdev_io *io = &slot->io;
    if (slot->kind == RANGE_ZEROES) {
        *io = (struct bdev_io){.op = BDEV_OP_WRITE_ZEROES, .offset = slot->start, .length = slot->end - slot->start,
                               .flags = c->o.compare_target ? 0 : BDEV_MAY_UNMAP};
        slot->scan = slot->end;
    } else {
        uint64_t unit;
        if (c->o.compare_target)
            unit = c->alignment;
        else if (c->o.compress)
            unit = c->o.target->limits.compress_unit;
        else if (c->o.min_sparse)
            unit = c->o.min_sparse;
        else
            unit = slot->end - slot->start;
        enum run_kind kind = RUN_SKIP;
        uint64_t run_start = 0, run_end = 0;
        while (slot->scan < slot->end) {
            uint64_t unit_end = min_u64(align_down(slot->scan, unit) + unit, slot->end);
            enum run_kind k = classify(slot, slot->scan, unit_end, unit);
            if (run_end && k != kind)
                break;
            if (!run_end)
                run_start = slot->scan;
            kind = k;
            run_end = slot->scan = unit_end;
            if (kind == RUN_SKIP) /* nothing to submit: start the next run afresh */
                run_end = 0;
        }
        if (!run_end) {
            slot_finished(slot);
            return;
        }
        if (kind == RUN_ZERO) {
            *io = (struct bdev_io){.op = BDEV_OP_WRITE_ZEROES, .offset = run_start, .length = run_end - run_start,
                                   .flags = c->o.compare_target ? 0 : BDEV_MAY_UNMAP};
        } else {
            slot->iov = (struct iovec){.iov_base = slot->buffer + (run_start - slot->start),
                                       .iov_len = (size_t)(run_end - run_start)};
            *io = (struct bdev_io){.op = BDEV_OP_WRITE, .offset = run_start, .length = run_end - run_start,
                                   .iov = &slot->iov, .iovcnt = 1,
                                   .flags = kind == RUN_COMPRESSED ? BDEV_COMPRESS : 0};
        }
    }
    io->ctx = c->ctx;
    io->complete = write_done;
    io->opaque = slot;
    bdev_submit(c->o.target, io);
}

static void try_write(struct slot *slot)
{
    struct img_copy *c = slot->copy;
    if (c->error) {
        slot_finished(slot);
        return;
    }
    if (!c->o.out_of_order && c->write_cursor != slot->start) {
        slot->state = SLOT_WAITING;
        return;
    }
    slot->state = SLOT_WRITING;
    slot->scan = slot->start;
    write_next(slot);
}

/* ---- reading ---- */

static void read_done(struct bdev_io *io)
{
    struct slot *slot = io->opaque;
    struct img_copy *c = slot->copy;
    if (io->result < 0)
        fail(c, io->result, "reading at byte", io == &slot->io ? c->starts[slot->source] + io->offset : io->offset);
    if (--slot->reads == 0)
        try_write(slot);
}

static void start_slot(struct slot *slot)
{
    struct img_copy *c = slot->copy;
    uint64_t length = slot->end - slot->start;
    if (slot->kind != RANGE_DATA) {
        try_write(slot);
        return;
    }
    slot->state = SLOT_READING;
    slot->reads = 1; /* held while submitting */
    if (slot->source_zero) {
        memset(slot->buffer, 0, (size_t)length);
    } else {
        slot->reads++;
        slot->iov = (struct iovec){.iov_base = slot->buffer, .iov_len = (size_t)length};
        slot->io = (struct bdev_io){.op = BDEV_OP_READ, .offset = slot->start - c->starts[slot->source],
                                    .length = length, .iov = &slot->iov, .iovcnt = 1, .ctx = c->ctx,
                                    .complete = read_done, .opaque = slot};
        bdev_submit(c->sources[slot->source], &slot->io);
    }
    if (c->o.compare_target) {
        slot->reads++;
        slot->target_iov = (struct iovec){.iov_base = slot->target_buffer, .iov_len = (size_t)length};
        slot->target_io = (struct bdev_io){.op = BDEV_OP_READ, .offset = slot->start, .length = length,
                                           .iov = &slot->target_iov, .iovcnt = 1, .ctx = c->ctx,
                                           .complete = read_done, .opaque = slot};
        bdev_submit(c->o.target, &slot->target_io);
    }
    if (--slot->reads == 0)
        try_write(slot);
}

/* Hand the range at c->next to slot; false when block status must be fetched first. */
static bool claim(struct img_copy *c, struct slot *slot)
{
    uint64_t next = c->next;
    size_t s = source_of(c, next);
    uint64_t base = c->starts[s], source_end = base + c->sources[s]->size;
    uint32_t flags;
    uint64_t extent_end;
    if (!status_at(c, s, next - base, &flags, &extent_end)) {
        fetch_status(c, s, next - base);
        return false;
    }
    extent_end += base;
    bool zero = (flags & BDEV_EXTENT_ZERO) != 0;
    uint64_t end = 0;
    slot->source_zero = false;
    slot->kind = RANGE_DATA;
    if (zero) {
        bool can_zero = (c->o.target->caps & BDEV_CAP_WRITE_ZEROES) != 0;
        bool as_data = c->o.min_sparse == 0 || c->o.compare_target || (!c->o.target_reads_zero && !can_zero);
        end = extent_end;
        if (as_data)
            end = min_u64(end, next + c->chunk);
        else if (!c->o.target_reads_zero)
            end = min_u64(end, next + ZERO_SPAN);
        if (end < source_end) {
            uint64_t aligned = align_down(end, c->alignment);
            if (aligned > next)
                end = aligned;
            else
                zero = false; /* less than a cluster of zeroes: part of the data around it */
        }
        if (zero) {
            slot->source_zero = as_data;
            slot->kind = as_data ? RANGE_DATA : c->o.target_reads_zero ? RANGE_SKIP : RANGE_ZEROES;
        }
    }
    if (!zero) {
        end = min_u64(next + c->chunk, source_end);
        if (extent_end < end) {
            uint64_t up = align_up(extent_end, c->alignment);
            if (up < end)
                end = up;
        }
        if (end < source_end) {
            uint64_t aligned = align_down(end, c->alignment);
            if (aligned > next)
                end = aligned;
        }
    }
    slot->start = next;
    slot->end = end;
    slot->source = s;
    slot->counted = !(flags & BDEV_EXTENT_ZERO) || c->o.min_sparse == 0 || !zero ? end - next : 0;
    c->next = end;
    return true;
}

/* ---- the driver loop ---- */

static void finish(struct img_copy *c, int rc)
{
    c->finished = true;
    c->done(c->opaque, rc, rc < 0 ? c->message : NULL);
}

static void flush_done(struct bdev_io *io)
{
    struct img_copy *c = io->opaque;
    if (io->result < 0) {
        c->error = io->result;
        snprintf(c->message, sizeof(c->message), "error while flushing the output: %s", strerror(-io->result));
    }
    finish(c, io->result < 0 ? io->result : 0);
}

static void pump_once(struct img_copy *c)
{
    if (c->flushing || c->finished)
        return;
    bool busy = c->status_busy;
    for (uint32_t i = 0; i < c->slot_count; i++) {
        struct slot *slot = &c->slots[i];
        if (c->error && slot->state == SLOT_WAITING)
            slot->state = SLOT_FREE; /* nothing in flight: its turn will not come */
        busy |= slot->state != SLOT_FREE;
    }
    if (c->error) {
        if (!busy)
            finish(c, c->error);
        return;
    }
    while (c->scanning && !c->status_busy) {
        if (c->scan_next >= c->total) {
            c->scanning = false;
            break;
        }
        size_t s = source_of(c, c->scan_next);
        uint64_t base = c->starts[s], local = c->scan_next - base, end;
        uint32_t flags;
        if (!status_at(c, s, local, &flags, &end)) {
            fetch_status(c, s, local);
            return;
        }
        end = min_u64(end, c->sources[s]->size);
        if (!(flags & BDEV_EXTENT_ZERO) || c->o.min_sparse == 0)
            c->to_copy += end - local;
        c->scan_next = base + end;
    }
    if (c->scanning)
        return;
    for (uint32_t i = 0; i < c->slot_count && c->next < c->total && !c->status_busy; i++) {
        struct slot *slot = &c->slots[i];
        if (slot->state != SLOT_FREE)
            continue;
        if (!claim(c, slot))
            break;
        slot->state = SLOT_READING;
        start_slot(slot);
    }
    busy = c->status_busy;
    for (uint32_t i = 0; i < c->slot_count; i++)
        busy |= c->slots[i].state != SLOT_FREE;
    if (!busy && !c->error && c->next >= c->total) {
        c->flushing = true;
        c->flush_io = (struct bdev_io){.op = BDEV_OP_FLUSH, .ctx = c->ctx, .complete = flush_done, .opaque = c};
        bdev_submit(c->o.target, &c->flush_io);
    }
}

static void pump(struct img_copy *c)
{
    if (c->in_pump) {
        c->pump_again = true;
        return;
    }
    c->in_pump = true;
    do {
        c->pump_again = false;
        pump_once(c);
    } while (c->pump_again);
    c->in_pump = false;
}

void img_copy_free(struct img_copy *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < IMG_COPY_MAX_PARALLEL; i++) {
        free(c->slots[i].buffer);
        free(c->slots[i].target_buffer);
    }
    free(c->sources);
    free(c->starts);
    free(c);
}

int img_copy_start(struct aio_context *ctx, const struct img_copy_options *options, img_copy_done_fn *done,
                   void *opaque, struct img_copy **out)
{
    if (!options->source_count || !options->target || options->parallel > IMG_COPY_MAX_PARALLEL ||
        options->min_sparse % 512)
        return -EINVAL;
    struct img_copy *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->ctx = ctx;
    c->o = *options;
    c->done = done;
    c->opaque = opaque;
    c->slot_count = options->parallel ? options->parallel : IMG_COPY_DEFAULT_PARALLEL;
    c->sources = calloc(options->source_count, sizeof(*c->sources));
    c->starts = calloc(options->source_count, sizeof(*c->starts));
    if (!c->sources || !c->starts)
        goto nomem;
    struct bdev *target = options->target;
    c->chunk = IMG_COPY_CHUNK;
    if (target->limits.max_transfer && target->limits.max_transfer < c->chunk)
        c->chunk = target->limits.max_transfer;
    for (size_t i = 0; i < options->source_count; i++) {
        c->sources[i] = options->sources[i];
        c->starts[i] = c->total;
        c->total += options->sources[i]->size;
        uint32_t max = options->sources[i]->limits.max_transfer;
        if (max && max < c->chunk)
            c->chunk = max;
    }
    if (c->total > target->size) {
        img_copy_free(c);
        return -ENOSPC;
    }
    /* Ranges end on target clusters: qcow2 says its cluster as compress_unit (and optimal_io_size). */
    c->alignment = target->limits.compress_unit ? target->limits.compress_unit : 512;
    if (target->limits.request_alignment > c->alignment)
        c->alignment = target->limits.request_alignment;
    if (c->alignment > c->chunk)
        c->alignment = c->chunk;
    if (options->compress && !(target->caps & BDEV_CAP_COMPRESS)) {
        img_copy_free(c);
        return -ENOTSUP;
    }
    if (c->chunk > c->alignment)
        c->chunk = align_down(c->chunk, c->alignment);
    for (uint32_t i = 0; i < c->slot_count; i++) {
        struct slot *slot = &c->slots[i];
        slot->copy = c;
        if (posix_memalign((void **)&slot->buffer, BUFFER_ALIGNMENT, (size_t)c->chunk))
            goto nomem;
        if (options->compare_target &&
            posix_memalign((void **)&slot->target_buffer, BUFFER_ALIGNMENT, (size_t)c->chunk))
            goto nomem;
    }
    c->cache_source = SIZE_MAX;
    c->scanning = options->progress != NULL;
    *out = c;
    pump(c);
    return 0;
nomem:
    img_copy_free(c);
    return -ENOMEM;
}

struct run_state {
    bool done;
    int result;
    char *message;
};

static void run_done(void *opaque, int result, const char *message)
{
    struct run_state *state = opaque;
    state->done = true;
    state->result = result;
    if (message)
        state->message = strdup(message);
}

int img_copy_run(struct aio_context *ctx, const struct img_copy_options *options, char **error_message)
{
    struct run_state state = {0};
    struct img_copy *c = NULL;
    int rc = img_copy_start(ctx, options, run_done, &state, &c);
    if (rc < 0) {
        if (error_message)
            *error_message = strdup(rc == -ENOSPC ? "output file is smaller than input file" : strerror(-rc));
        return rc;
    }
    while (!state.done && aio_context_pending(ctx))
        aio_context_drain(ctx);
    img_copy_free(c);
    if (!state.done) {
        free(state.message);
        if (error_message)
            *error_message = strdup("the copy stalled (no request in flight)");
        return -EIO;
    }
    if (state.result < 0 && error_message)
        *error_message = state.message;
    else
        free(state.message);
    return state.result;
}
