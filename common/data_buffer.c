#include "common/data_buffer.h"

#include <stdlib.h>

enum { BUFFER_ALIGNMENT = 4096 };

/* The bookkeeping lives after the data, in the same allocation. */
struct data_buffer *data_buffer_new(size_t size)
{
    size_t data_size = (size + 15) & ~(size_t)15;
    if (size == 0 || data_size < size || data_size + sizeof(struct data_buffer) < data_size)
        return NULL;
    void *memory = NULL;
    if (posix_memalign(&memory, BUFFER_ALIGNMENT, data_size + sizeof(struct data_buffer)) != 0)
        return NULL;
    struct data_buffer *buffer = (struct data_buffer *)((uint8_t *)memory + data_size);
    buffer->data = memory;
    buffer->size = size;
    buffer->refs = 1;
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
    if (buffer && --buffer->refs == 0)
        free(buffer->data);
}
