#include "block/range_lock.h"

#include <errno.h>
#include <stddef.h>

int range_lock_init(struct range_lock *lock)
{
    lock->head = lock->tail = NULL;
    lock->exclusive_count = lock->waiting_count = 0;
    return -pthread_mutex_init(&lock->mutex, NULL);
}

void range_lock_destroy(struct range_lock *lock) { pthread_mutex_destroy(&lock->mutex); }

static bool conflicts(const struct range_lock_entry *a, const struct range_lock_entry *b)
{
    return (a->exclusive || b->exclusive) && a->start < b->end && b->start < a->end;
}

/* Must entry wait for an entry that arrived before it?  Called with the mutex held. */
static bool blocked(const struct range_lock_entry *entry)
{
    for (const struct range_lock_entry *earlier = entry->prev; earlier; earlier = earlier->prev) {
        if (conflicts(earlier, entry))
            return true;
    }
    return false;
}

bool range_lock_acquire(struct range_lock *lock, struct range_lock_entry *entry)
{
    pthread_mutex_lock(&lock->mutex);
    entry->next = NULL;
    entry->next_granted = NULL;
    entry->prev = lock->tail;
    if (lock->tail)
        lock->tail->next = entry;
    else
        lock->head = entry;
    lock->tail = entry;
    if (entry->exclusive)
        lock->exclusive_count++;
    /* A shared entry conflicts only with exclusive ones. */
    entry->waiting = (entry->exclusive || lock->exclusive_count > 0) && blocked(entry);
    if (entry->waiting)
        lock->waiting_count++;
    bool granted = !entry->waiting;
    pthread_mutex_unlock(&lock->mutex);
    return granted;
}

void range_lock_release(struct range_lock *lock, struct range_lock_entry *entry)
{
    struct range_lock_entry *granted_list = NULL, **granted_tail = &granted_list;

    pthread_mutex_lock(&lock->mutex);
    if (entry->prev)
        entry->prev->next = entry->next;
    else
        lock->head = entry->next;
    if (entry->next)
        entry->next->prev = entry->prev;
    else
        lock->tail = entry->prev;
    if (entry->exclusive)
        lock->exclusive_count--;

    /* Only entries after this one can have waited for it. */
    struct range_lock_entry *e = lock->waiting_count > 0 ? entry->next : NULL;
    for (; e; e = e->next) {
        if (e->waiting && !blocked(e)) {
            e->waiting = false;
            lock->waiting_count--;
            e->next_granted = NULL;
            *granted_tail = e;
            granted_tail = &e->next_granted;
        }
    }
    pthread_mutex_unlock(&lock->mutex);

    /* Outside the mutex: a callback may hand its request to another thread. */
    while (granted_list) {
        struct range_lock_entry *next = granted_list->next_granted;
        granted_list->granted(granted_list);
        granted_list = next;
    }
}
