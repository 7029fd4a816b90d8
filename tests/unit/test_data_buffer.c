#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "common/data_buffer.h"

Test(data_buffer, aligned_sized_and_writable)
{
    size_t sizes[] = {1, 4095, 4096, 4097, 65536, 1 << 20, (4 << 20) + 1, 32 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        struct data_buffer *buffer = data_buffer_new(sizes[i]);
        cr_assert_not_null(buffer);
        cr_assert_eq((uintptr_t)buffer->data % 4096, 0, "not page aligned");
        cr_assert_eq(buffer->size, sizes[i]);
        cr_assert_geq(buffer->capacity, sizes[i]);
        memset(buffer->data, 0x5a, buffer->size); /* ASan catches an undersized allocation */
        data_buffer_unref(buffer);
    }
    cr_assert_null(data_buffer_new(0));
}

Test(data_buffer, released_buffers_are_reused_by_size_class)
{
    struct data_buffer *first = data_buffer_new(1 << 20);
    uint8_t *data = first->data;
    data_buffer_unref(first);
    struct data_buffer *second = data_buffer_new((1 << 20) - 100); /* same class */
    cr_assert_eq(second->data, data, "a spare of the same class was not reused");
    cr_assert_eq(second->size, (1 << 20) - 100);
    cr_assert_eq(second->refs, 1);
    data_buffer_unref(second);
}

Test(data_buffer, references_keep_the_buffer)
{
    struct data_buffer *buffer = data_buffer_new(8192);
    data_buffer_ref(buffer);
    data_buffer_unref(buffer);
    memset(buffer->data, 1, buffer->size); /* still ours: ASan would flag a use after free */
    cr_assert_eq(buffer->refs, 1);
    data_buffer_unref(buffer);
}

static void *churn(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        struct data_buffer *buffers[8];
        for (int j = 0; j < 8; j++) {
            buffers[j] = data_buffer_new((size_t)4096 << (j % 5));
            memset(buffers[j]->data, j, buffers[j]->size);
        }
        for (int j = 0; j < 8; j++)
            data_buffer_unref(buffers[j]);
    }
    return NULL; /* the thread's spares are freed at its exit (LeakSanitizer checks) */
}

Test(data_buffer, per_thread_caches)
{
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, churn, NULL), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
}
