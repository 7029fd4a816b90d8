/*
 * range_lock: keeps writes that overlap from interleaving their steps.
 *
 * With O_DIRECT an unaligned write is a read-modify-write of whole blocks;
 * if another write to the same block lands between the read and the write,
 * its bytes are lost.  So, as QEMU's serialising requests do, every write
 * takes its block-aligned range here: an exclusive entry (read-modify-write)
 * waits for every earlier overlapping entry, a shared one only for earlier
 * overlapping exclusive ones.  Entries are granted in arrival order, so no
 * request starves.  Thread-safe: a bdev is shared by every worker thread.
 */
#ifndef LUNA_BLOCK_RANGE_LOCK_H
#define LUNA_BLOCK_RANGE_LOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct range_lock_entry {
    uint64_t start, end; /* [start, end) */
    bool exclusive;
    /* Called, on whichever thread released the blocker, once a waiting entry is granted. */
    void (*granted)(struct range_lock_entry *entry);

    /* Private. */
    bool waiting;
    struct range_lock_entry *prev, *next, *next_granted;
};

struct range_lock {
    pthread_mutex_t mutex;
    struct range_lock_entry *head, *tail;
    /*
     * Aligned O_DIRECT writes take shared entries and almost never meet an
     * exclusive one: with none present, acquire grants without scanning, and
     * release scans only when an entry waits.
     */
    unsigned exclusive_count;
    unsigned waiting_count;
};

int range_lock_init(struct range_lock *lock);
void range_lock_destroy(struct range_lock *lock);

/*
 * Enter entry (start, end, exclusive, granted filled in).  Returns true when
 * granted now; otherwise entry->granted(entry) runs later.
 */
bool range_lock_acquire(struct range_lock *lock, struct range_lock_entry *entry);

/* Leave; grants the waiters this unblocks (their callbacks run here). */
void range_lock_release(struct range_lock *lock, struct range_lock_entry *entry);

#endif
