/*
 * Write-back caches of one-cluster metadata tables (L2 tables, refcount
 * blocks), with least-recently-used eviction and QEMU's dependency rule:
 * a cache that depends on another writes and flushes that one before
 * writing any of its own dirty tables.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2/qcow2_internal.h"

int qcow2_cache_init(struct qcow2_cache *cache, struct qcow2 *image, const char *name, uint32_t count,
                     uint64_t key_count)
{
    memset(cache, 0, sizeof(*cache));
    cache->image = image;
    cache->name = name;
    cache->entries = calloc(count, sizeof(*cache->entries));
    if (!cache->entries)
        return -ENOMEM;
    cache->count = count;
    for (uint32_t i = 0; i < count; i++) {
        if (posix_memalign((void **)&cache->entries[i].data, 4096, image->cluster_size) != 0) {
            qcow2_cache_destroy(cache);
            return -ENOMEM;
        }
    }
    return qcow2_cache_resize_keys(cache, key_count);
}

void qcow2_cache_destroy(struct qcow2_cache *cache)
{
    if (cache->entries)
        for (uint32_t i = 0; i < cache->count; i++)
            free(cache->entries[i].data);
    free(cache->entries);
    free(cache->slot_of_key);
    memset(cache, 0, sizeof(*cache));
}

int qcow2_cache_resize_keys(struct qcow2_cache *cache, uint64_t key_count)
{
    if (key_count == 0)
        key_count = 1;
    if (key_count <= cache->key_count)
        return 0;
    int32_t *grown = realloc(cache->slot_of_key, key_count * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    for (uint64_t k = cache->key_count; k < key_count; k++)
        grown[k] = -1;
    cache->slot_of_key = grown;
    cache->key_count = key_count;
    return 0;
}

static struct qcow2_cache_entry *lookup(struct qcow2_cache *cache, uint64_t key)
{
    if (key >= cache->key_count || cache->slot_of_key[key] < 0)
        return NULL;
    return &cache->entries[cache->slot_of_key[key]];
}

uint8_t *qcow2_cache_peek(struct qcow2_cache *cache, uint64_t key)
{
    struct qcow2_cache_entry *entry = lookup(cache, key);
    if (!entry)
        return NULL;
    entry->last_use = ++cache->clock;
    return entry->data;
}

static int flush_dependency(struct qcow2_cache *cache)
{
    int rc = qcow2_cache_write_back(cache->depends);
    if (rc == 0)
        rc = qcow2_file_flush(cache->image);
    if (rc == 0)
        cache->depends = NULL;
    return rc;
}

static int entry_write(struct qcow2_cache *cache, struct qcow2_cache_entry *entry)
{
    if (!entry->dirty)
        return 0;
    if (cache->depends) {
        int rc = flush_dependency(cache);
        if (rc < 0)
            return rc;
    }
    struct qcow2 *q = cache->image;
    /* Never write a table over the header: that would be corruption, not I/O. */
    if (entry->offset < q->cluster_size || (entry->offset & (q->cluster_size - 1)))
        return qcow2_signal_corruption(q, cache->name, entry->offset);
    int rc = qcow2_file_write(q, entry->offset, entry->data, q->cluster_size);
    if (rc == 0)
        entry->dirty = false;
    return rc;
}

int qcow2_cache_write_back(struct qcow2_cache *cache)
{
    int result = 0;
    for (uint32_t i = 0; i < cache->count; i++) {
        struct qcow2_cache_entry *entry = &cache->entries[i];
        if (entry->offset && entry->dirty) {
            int rc = entry_write(cache, entry);
            if (rc < 0 && result == 0)
                result = rc;
        }
    }
    return result;
}

int qcow2_cache_get(struct qcow2_cache *cache, uint64_t key, uint64_t offset, bool fresh, uint8_t **table)
{
    struct qcow2_cache_entry *entry = lookup(cache, key);
    if (entry && entry->offset == offset) {
        entry->last_use = ++cache->clock;
        if (fresh) {
            memset(entry->data, 0, cache->image->cluster_size);
            entry->dirty = true;
        }
        *table = entry->data;
        return 0;
    }
    if (key >= cache->key_count)
        return -EINVAL;
    if (entry) {
        /* Cached under an older offset (the table moved): drop the stale copy. */
        cache->slot_of_key[key] = -1;
        entry->offset = 0;
        entry->dirty = false;
    }

    /* Evict the least recently used slot. */
    struct qcow2_cache_entry *victim = NULL;
    for (uint32_t i = 0; i < cache->count; i++) {
        struct qcow2_cache_entry *candidate = &cache->entries[i];
        if (!candidate->offset) {
            victim = candidate;
            break;
        }
        if (!victim || candidate->last_use < victim->last_use)
            victim = candidate;
    }
    if (victim->offset) {
        int rc = entry_write(cache, victim);
        if (rc < 0)
            return rc;
        cache->slot_of_key[victim->key] = -1;
        victim->offset = 0;
    }

    struct qcow2 *q = cache->image;
    if (fresh) {
        memset(victim->data, 0, q->cluster_size);
    } else {
        int rc = qcow2_file_read(q, offset, victim->data, q->cluster_size);
        if (rc < 0)
            return rc;
    }
    victim->key = key;
    victim->offset = offset;
    victim->dirty = fresh;
    victim->last_use = ++cache->clock;
    cache->slot_of_key[key] = (int32_t)(victim - cache->entries);
    *table = victim->data;
    return 0;
}

void qcow2_cache_mark_dirty(struct qcow2_cache *cache, uint64_t key)
{
    struct qcow2_cache_entry *entry = lookup(cache, key);
    if (entry)
        entry->dirty = true;
}

void qcow2_cache_discard(struct qcow2_cache *cache, uint64_t key)
{
    struct qcow2_cache_entry *entry = lookup(cache, key);
    if (!entry)
        return;
    cache->slot_of_key[key] = -1;
    entry->offset = 0;
    entry->dirty = false;
}

void qcow2_cache_drop_all(struct qcow2_cache *cache)
{
    for (uint32_t i = 0; i < cache->count; i++) {
        struct qcow2_cache_entry *entry = &cache->entries[i];
        if (entry->offset)
            cache->slot_of_key[entry->key] = -1;
        entry->offset = 0;
        entry->dirty = false;
    }
}

int qcow2_cache_set_dependency(struct qcow2_cache *cache, struct qcow2_cache *dependency)
{
    int rc;
    /* Chains are not kept: settle the dependency's own dependency now. */
    if (dependency->depends && (rc = flush_dependency(dependency)) < 0)
        return rc;
    if (cache->depends && cache->depends != dependency && (rc = flush_dependency(cache)) < 0)
        return rc;
    cache->depends = dependency;
    return 0;
}
