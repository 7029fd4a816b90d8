#include "block/export.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static bool strings_equal(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

bool export_config_equal(const struct export_config *a, const struct export_config *b)
{
    const struct bdev_options *x = &a->bdev, *y = &b->bdev;
    return strings_equal(a->name, b->name) && strings_equal(a->description, b->description) &&
           strings_equal(x->path, y->path) && x->format == y->format && x->readonly == y->readonly &&
           x->cache == y->cache && x->aio == y->aio && x->discard == y->discard &&
           x->create_size_set == y->create_size_set &&
           (!x->create_size_set || x->create_size == y->create_size) && x->l2_cache_size == y->l2_cache_size &&
           a->overlay == b->overlay && strings_equal(a->overlay_dir, b->overlay_dir) &&
           strings_equal(x->lvm_devices, y->lvm_devices) && x->reconnect_timeout == y->reconnect_timeout;
}

void export_config_clear(struct export_config *config)
{
    free(config->name);
    free(config->description);
    free((char *)config->bdev.path);
    free(config->overlay_dir);
    free((char *)config->bdev.lvm_devices);
    config->bdev.lvm_devices = NULL;
    config->name = NULL;
    config->description = NULL;
    config->bdev.path = NULL;
    config->overlay_dir = NULL;
}

int export_config_copy(struct export_config *dst, const struct export_config *src)
{
    struct export_config copy = *src;
    copy.name = src->name ? strdup(src->name) : NULL;
    copy.description = src->description ? strdup(src->description) : NULL;
    copy.bdev.path = src->bdev.path ? strdup(src->bdev.path) : NULL;
    copy.overlay_dir = src->overlay_dir ? strdup(src->overlay_dir) : NULL;
    copy.bdev.lvm_devices = src->bdev.lvm_devices ? strdup(src->bdev.lvm_devices) : NULL;
    if ((src->name && !copy.name) || (src->description && !copy.description) ||
        (src->bdev.path && !copy.bdev.path) || (src->overlay_dir && !copy.overlay_dir) ||
        (src->bdev.lvm_devices && !copy.bdev.lvm_devices)) {
        export_config_clear(&copy);
        return -ENOMEM;
    }
    *dst = copy;
    return 0;
}

int export_open(const struct export_config *config, struct export **out, char **error_message)
{
    if (error_message)
        *error_message = NULL;
    struct export *export = calloc(1, sizeof(*export));
    if (!export || export_config_copy(&export->config, config) < 0) {
        free(export);
        if (error_message)
            *error_message = strdup("out of memory");
        return -ENOMEM;
    }
    /* Under overlays the image is only ever read: shared by every client's layer. */
    struct bdev_options options = export->config.bdev;
    if (config->overlay != EXPORT_OVERLAY_NONE)
        options.readonly = true;
    int rc = bdev_open(&options, &export->bdev, error_message);
    if (rc < 0) {
        export_config_clear(&export->config);
        free(export);
        return rc;
    }
    export->readonly = export->config.bdev.readonly || bdev_is_read_only(export->bdev);
    if ((rc = export_init_state(export)) < 0) {
        bdev_close(export->bdev);
        export_config_clear(&export->config);
        free(export);
        if (error_message)
            *error_message = strdup("out of memory");
        return rc;
    }
    *out = export;
    return 0;
}

int export_init_state(struct export *export)
{
    int rc = range_lock_init(&export->writers);
    if (rc < 0)
        return rc;
    export->refcount = 1;
    pthread_mutex_init(&export->views_lock, NULL);
    return 0;
}

struct export *export_ref(struct export *export)
{
    __atomic_fetch_add(&export->refcount, 1, __ATOMIC_RELAXED);
    return export;
}

/*
 * A persistent view drops its last reference under its base's views_lock,
 * leaving the base's list in the same step, so export_attach (which looks
 * views up and references them under that lock) never revives a dying one.
 */
static bool release_persistent_view(struct export *view)
{
    struct export *base = view->base;
    pthread_mutex_lock(&base->views_lock);
    bool last = __atomic_fetch_sub(&view->refcount, 1, __ATOMIC_ACQ_REL) == 1;
    if (last) {
        for (struct export **link = &base->views; *link; link = &(*link)->next_view) {
            if (*link == view) {
                *link = view->next_view;
                break;
            }
        }
    }
    pthread_mutex_unlock(&base->views_lock);
    return last;
}

void export_unref(struct export *export)
{
    if (!export)
        return;
    if (export->base && export->identity) {
        if (!release_persistent_view(export))
            return;
    } else if (__atomic_fetch_sub(&export->refcount, 1, __ATOMIC_ACQ_REL) != 1) {
        /* acq_rel: the last owner must see every other owner's writes before closing. */
        return;
    }
    /* An overlay's bdev borrows its base's: close it first. */
    bdev_close(export->bdev);
    struct export *base = export->base;
    free(export->identity);
    export_config_clear(&export->config);
    pthread_mutex_destroy(&export->views_lock);
    range_lock_destroy(&export->writers);
    free(export);
    export_unref(base);
}

struct export_table *export_table_new(void)
{
    struct export_table *table = calloc(1, sizeof(*table));
    if (table)
        table->refcount = 1;
    return table;
}

int export_table_add(struct export_table *table, struct export *export)
{
    struct export **grown = realloc(table->exports, sizeof(*grown) * (table->count + 1));
    if (!grown)
        return -ENOMEM;
    table->exports = grown;
    table->exports[table->count++] = export;
    return 0;
}

struct export_table *export_table_ref(struct export_table *table)
{
    __atomic_fetch_add(&table->refcount, 1, __ATOMIC_RELAXED);
    return table;
}

void export_table_unref(struct export_table *table)
{
    if (!table)
        return;
    if (__atomic_fetch_sub(&table->refcount, 1, __ATOMIC_ACQ_REL) != 1)
        return;
    for (size_t i = 0; i < table->count; i++)
        export_unref(table->exports[i]);
    free(table->exports);
    free(table);
}

struct export *export_table_find(const struct export_table *table, const char *name)
{
    for (size_t i = 0; i < table->count; i++) {
        if (strcmp(table->exports[i]->config.name, name) == 0)
            return table->exports[i];
    }
    return NULL;
}
