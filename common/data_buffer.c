#include "common/data_buffer.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

enum {
    BUFFER_ALIGNMENT = 4096,
    /* Size classes 4 KiB, 8 KiB, ... 4 MiB are recycled; larger buffers are not. */
    SMALLEST_CLASS_SHIFT = 12,
    LARGEST_CLASS_SHIFT = 22,
    CLASS_COUNT = LARGEST_CLASS_SHIFT - SMALLEST_CLASS_SHIFT + 1,
    /*
     * Per thread: at most CLASS_BUFFERS_MAX spares of a class, at most
     * THREAD_BYTES_MAX bytes of spares in all.  A connection with 32
     * requests of 1 MiB in flight (fio's usual iodepth) recycles them all.
     */
    CLASS_BUFFERS_MAX = 64,
    THREAD_BYTES_MAX = 32 << 20,
};

/*
 * Each thread keeps spare buffers by size class.  glibc serves large
 * aligned allocations with mmap/munmap: a fresh 1 MiB buffer per request
 * cost ~260 page faults, more than the request itself.  Buffers are
 * allocated and released on the thread that owns the connection, so the
 * cache needs no lock; the pthread key frees a thread's spares at its exit.
 */
struct buffer_cache {
    struct data_buffer *spare[CLASS_COUNT];
    unsigned count[CLASS_COUNT];
    size_t bytes; /* of every spare */
};

static __thread struct buffer_cache *thread_cache;
static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

static void free_buffer(struct data_buffer *buffer) { free(buffer->data); }

static void cache_destroy(void *arg)
{
    struct buffer_cache *cache = arg;
    for (int class = 0; class < CLASS_COUNT; class++) {
        while (cache->spare[class]) {
            struct data_buffer *buffer = cache->spare[class];
            cache->spare[class] = buffer->next_spare;
            free_buffer(buffer);
        }
    }
    free(cache);
}

static bool cache_key_ready;

static void cache_key_create(void)
{
    /* Without a key, buffers are simply freed: slower, still correct. */
    cache_key_ready = pthread_key_create(&cache_key, cache_destroy) == 0;
}

static struct buffer_cache *cache_get(void)
{
    if (thread_cache)
        return thread_cache;
    pthread_once(&cache_key_once, cache_key_create);
    if (!cache_key_ready)
        return NULL;
    struct buffer_cache *cache = calloc(1, sizeof(*cache));
    if (!cache)
        return NULL;
    if (pthread_setspecific(cache_key, cache) != 0) {
        free(cache);
        return NULL;
    }
    thread_cache = cache;
    return cache;
}

/* The class holding size bytes, or -1 when size is above the largest class. */
static int size_class(size_t size)
{
    int class = 0;
    while (class < CLASS_COUNT && ((size_t)1 << (class + SMALLEST_CLASS_SHIFT)) < size)
        class++;
    return class < CLASS_COUNT ? class : -1;
}

/* The bookkeeping lives after the data, in the same allocation. */
static struct data_buffer *allocate(size_t capacity)
{
    size_t data_size = (capacity + 15) & ~(size_t)15;
    if (data_size < capacity || data_size + sizeof(struct data_buffer) < data_size)
        return NULL;
    void *memory = NULL;
    if (posix_memalign(&memory, BUFFER_ALIGNMENT, data_size + sizeof(struct data_buffer)) != 0)
        return NULL;
    struct data_buffer *buffer = (struct data_buffer *)((uint8_t *)memory + data_size);
    buffer->data = memory;
    buffer->capacity = capacity;
    return buffer;
}

struct data_buffer *data_buffer_new(size_t size)
{
    if (size == 0)
        return NULL;
    int class = size_class(size);
    struct data_buffer *buffer = NULL;
    if (class >= 0) {
        struct buffer_cache *cache = thread_cache;
        if (cache && cache->spare[class]) {
            buffer = cache->spare[class];
            cache->spare[class] = buffer->next_spare;
            cache->count[class]--;
            cache->bytes -= buffer->capacity;
        } else {
            buffer = allocate((size_t)1 << (class + SMALLEST_CLASS_SHIFT));
        }
    } else {
        buffer = allocate(size);
    }
    if (!buffer)
        return NULL;
    buffer->size = size;
    buffer->refs = 1;
    buffer->next_spare = NULL;
    return buffer;
}

struct data_buffer *data_buffer_ref(struct data_buffer *buffer)
{
    buffer->refs++;
    return buffer;
}

void data_buffer_unref(void *arg)
{
    struct data_buffer *buffer = arg;
    if (!buffer || --buffer->refs > 0)
        return;
    int class = size_class(buffer->capacity);
    bool exact_class = class >= 0 && buffer->capacity == (size_t)1 << (class + SMALLEST_CLASS_SHIFT);
    struct buffer_cache *cache = exact_class ? cache_get() : NULL;
    if (cache && cache->count[class] < CLASS_BUFFERS_MAX && cache->bytes + buffer->capacity <= THREAD_BYTES_MAX) {
        buffer->next_spare = cache->spare[class];
        cache->spare[class] = buffer;
        cache->count[class]++;
        cache->bytes += buffer->capacity;
        return;
    }
    free_buffer(buffer);
}
