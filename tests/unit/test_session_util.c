/*
 * The surroundings of a protocol session under test (see
 * test_session_util.h): exports, loop, send queue and its reader.
 */
#include "test_session_util.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/aio.h"
#include "block/export.h"
#include "common/send_queue.h"
#include "test_block_util.h"

uint8_t session_pattern_byte(uint64_t offset) { return (uint8_t)(offset * 13 + offset / 4096 + 5); }

static void wake(void *opaque)
{
    struct session_world *w = opaque;
    w->wakes++;
}

const struct session_ops session_world_ops = {.wake = wake};

void session_world_init(struct session_world *w)
{
    memset(w, 0, sizeof(*w));
    struct test_loop loop;
    test_loop_init(&loop);
    w->loop = loop.loop;
    w->ctx = loop.ctx;
    w->table = export_table_new();
    cr_assert_not_null(w->table);
    w->out = send_queue_new();
    cr_assert_not_null(w->out);
}

const char *session_world_add_export(struct session_world *w, const struct session_export *spec)
{
    cr_assert_lt(w->path_count, sizeof(w->paths) / sizeof(w->paths[0]), "too many exports");
    char *path = spec->pattern ? temp_file_filled(spec->size, session_pattern_byte) : temp_file(spec->size);
    w->paths[w->path_count++] = path;
    struct export_config config = {0};
    config.name = (char *)spec->name;
    config.description = (char *)spec->description;
    bdev_options_init(&config.bdev);
    config.bdev.path = path;
    config.bdev.readonly = spec->readonly;
    config.bdev.aio = spec->aio;
    struct export *export = NULL;
    char *message = NULL;
    int rc = export_open(&config, &export, &message);
    cr_assert_eq(rc, 0, "export_open %s: %s", path, message ? message : "?");
    cr_assert_eq(export_table_add(w->table, export), 0);
    return path;
}

void session_world_fini(struct session_world *w, const struct session_protocol *protocol, void *session)
{
    send_queue_free(w->out);
    if (session)
        protocol->free(session);
    aio_context_drain(w->ctx);
    export_table_unref(w->table);
    test_loop_fini(&(struct test_loop){.loop = w->loop, .ctx = w->ctx});
    for (size_t i = 0; i < w->path_count; i++) {
        unlink(w->paths[i]);
        free(w->paths[i]);
    }
    free(w->output);
}

/* Move what the session queued into the world's buffer, so earlier bytes stay readable. */
static void pull_output(struct session_world *w)
{
    size_t queued = send_queue_length(w->out);
    if (queued == 0)
        return;
    if (w->output_length + queued > w->output_capacity) {
        size_t capacity = (w->output_length + queued) * 2;
        uint8_t *grown = realloc(w->output, capacity);
        cr_assert_not_null(grown);
        w->output = grown;
        w->output_capacity = capacity;
    }
    size_t n = send_queue_drain(w->out, w->output + w->output_length, queued);
    cr_assert_eq(n, queued);
    w->output_length += n;
}

size_t session_world_output_left(struct session_world *w)
{
    pull_output(w);
    return w->output_length - w->output_position;
}

const uint8_t *session_world_take(struct session_world *w, size_t n)
{
    pull_output(w);
    cr_assert_geq(w->output_length - w->output_position, n, "expected %zu more output bytes, have %zu", n,
                  w->output_length - w->output_position);
    const uint8_t *bytes = w->output + w->output_position;
    w->output_position += n;
    return bytes;
}
