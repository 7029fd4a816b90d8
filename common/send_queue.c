#include "send_queue.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Entries form a singly-linked FIFO.  Copied bytes are packed into "copy
 * blocks" so a run of small reply headers costs one entry and one iovec,
 * not one each.  Spent entries go to a free list: steady-state queuing does
 * no allocation.
 */
/*
 * Few spare copy blocks: an idle connection should not keep a burst's
 * worth of 4 KiB blocks (the target is < 64 KiB per idle connection).
 */
enum { COPY_BLOCK_SIZE = 4096, WRITEV_MAX_IOVECS = 64, FREE_BLOCKS_MAX = 4, FREE_LENT_MAX = 32 };

struct send_entry {
    struct send_entry *next;
    const uint8_t *data;
    size_t length;
    send_release_fn release;
    void *release_arg;
    size_t capacity;          /* > 0: a copy block whose bytes follow */
    uint8_t storage[];
};

struct send_queue {
    struct send_entry *head;
    struct send_entry *tail;
    size_t head_offset;       /* bytes of head already written */
    size_t queued;            /* bytes not yet written */
    struct send_entry *free_lent;   /* spare entries without storage */
    struct send_entry *free_blocks; /* spare COPY_BLOCK_SIZE copy blocks */
    unsigned free_lent_count, free_block_count;
};

struct send_queue *send_queue_new(void) { return calloc(1, sizeof(struct send_queue)); }

static void entry_recycle(struct send_queue *queue, struct send_entry *entry)
{
    if (entry->capacity == COPY_BLOCK_SIZE && queue->free_block_count < FREE_BLOCKS_MAX) {
        entry->next = queue->free_blocks;
        queue->free_blocks = entry;
        queue->free_block_count++;
    } else if (entry->capacity == 0 && queue->free_lent_count < FREE_LENT_MAX) {
        entry->next = queue->free_lent;
        queue->free_lent = entry;
        queue->free_lent_count++;
    } else {
        free(entry);
    }
}

static void entry_finish(struct send_queue *queue, struct send_entry *entry)
{
    if (entry->release)
        entry->release(entry->release_arg);
    entry_recycle(queue, entry);
}

static void free_list(struct send_entry *entry)
{
    while (entry) {
        struct send_entry *next = entry->next;
        free(entry);
        entry = next;
    }
}

void send_queue_free(struct send_queue *queue)
{
    if (!queue)
        return;
    struct send_entry *entry = queue->head;
    while (entry) {
        struct send_entry *next = entry->next;
        if (entry->release)
            entry->release(entry->release_arg);
        free(entry);
        entry = next;
    }
    free_list(queue->free_lent);
    free_list(queue->free_blocks);
    free(queue);
}

static void append(struct send_queue *queue, struct send_entry *entry)
{
    entry->next = NULL;
    if (queue->tail)
        queue->tail->next = entry;
    else
        queue->head = entry;
    queue->tail = entry;
}

static struct send_entry *new_copy_block(struct send_queue *queue, size_t needed)
{
    struct send_entry *entry;
    if (needed <= COPY_BLOCK_SIZE && queue->free_blocks) {
        entry = queue->free_blocks;
        queue->free_blocks = entry->next;
        queue->free_block_count--;
    } else {
        size_t capacity = needed > COPY_BLOCK_SIZE ? needed : COPY_BLOCK_SIZE;
        entry = malloc(sizeof(*entry) + capacity);
        if (!entry)
            return NULL;
        entry->capacity = capacity;
    }
    entry->data = entry->storage;
    entry->length = 0;
    entry->release = NULL;
    entry->release_arg = NULL;
    return entry;
}

int send_queue_copy(struct send_queue *queue, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    struct send_entry *tail = queue->tail;
    if (!(tail && tail->capacity && tail->capacity - tail->length >= len)) {
        tail = new_copy_block(queue, len);
        if (!tail)
            return -ENOMEM;
        append(queue, tail);
    }
    memcpy(tail->storage + tail->length, data, len);
    tail->length += len;
    queue->queued += len;
    return 0;
}

int send_queue_lend(struct send_queue *queue, const void *data, size_t len,
                    send_release_fn release, void *arg)
{
    struct send_entry *entry = queue->free_lent;
    if (entry) {
        queue->free_lent = entry->next;
        queue->free_lent_count--;
    } else {
        entry = malloc(sizeof(*entry));
        if (!entry)
            return -ENOMEM;
        entry->capacity = 0;
    }
    entry->data = data;
    entry->length = len;
    entry->release = release;
    entry->release_arg = arg;
    append(queue, entry);
    queue->queued += len;
    return 0;
}

size_t send_queue_length(const struct send_queue *queue) { return queue->queued; }

bool send_queue_empty(const struct send_queue *queue) { return queue->queued == 0 && !queue->head; }

/* Drop n written bytes from the front, releasing entries fully sent. */
static void consume(struct send_queue *queue, size_t n)
{
    queue->queued -= n;
    while (queue->head) {
        struct send_entry *head = queue->head;
        size_t left = head->length - queue->head_offset;
        if (n < left) {
            queue->head_offset += n;
            return;
        }
        n -= left;
        queue->head = head->next;
        if (!queue->head)
            queue->tail = NULL;
        queue->head_offset = 0;
        entry_finish(queue, head);
        /* Zero-length lent entries still release once reached. */
        if (n == 0 && queue->head && queue->head->length != 0)
            return;
    }
}

ssize_t send_queue_write(struct send_queue *queue, int fd)
{
    size_t total = 0;
    while (queue->head) {
        struct iovec iov[WRITEV_MAX_IOVECS];
        int count = 0;
        size_t offset = queue->head_offset;
        for (struct send_entry *entry = queue->head; entry && count < WRITEV_MAX_IOVECS;
             entry = entry->next) {
            if (entry->length > offset) {
                iov[count].iov_base = (void *)(entry->data + offset);
                iov[count].iov_len = entry->length - offset;
                count++;
            }
            offset = 0;
        }
        if (count == 0) { /* only empty entries: release them */
            consume(queue, 0);
            continue;
        }
        ssize_t written = writev(fd, iov, count);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            if (total > 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            return -errno;
        }
        consume(queue, (size_t)written);
        total += (size_t)written;
        size_t offered = 0;
        for (int i = 0; i < count; i++)
            offered += iov[i].iov_len;
        if ((size_t)written < offered)
            break; /* the socket is full */
    }
    return (ssize_t)total;
}

size_t send_queue_drain(struct send_queue *queue, void *out, size_t len)
{
    size_t copied = 0;
    while (queue->head && copied < len) {
        struct send_entry *head = queue->head;
        size_t left = head->length - queue->head_offset;
        size_t n = left < len - copied ? left : len - copied;
        memcpy((uint8_t *)out + copied, head->data + queue->head_offset, n);
        copied += n;
        consume(queue, n);
    }
    return copied;
}
