#include "export_registry.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct export_registry {
    pthread_mutex_t lock; /* guards current: swapped by reload, read by accepts */
    struct export_table *current;
    /* Names kept out of every table (export_registry_withhold); the main thread's only. */
    char **withheld;
    size_t withheld_count;
};

struct export_registry *export_registry_new(void)
{
    struct export_registry *registry = calloc(1, sizeof(*registry));
    if (!registry)
        return NULL;
    pthread_mutex_init(&registry->lock, NULL);
    return registry;
}

void export_registry_free(struct export_registry *registry)
{
    if (!registry)
        return;
    if (registry->current)
        export_table_unref(registry->current);
    for (size_t i = 0; i < registry->withheld_count; i++)
        free(registry->withheld[i]);
    free(registry->withheld);
    pthread_mutex_destroy(&registry->lock);
    free(registry);
}

struct export_table *export_registry_current(struct export_registry *registry)
{
    pthread_mutex_lock(&registry->lock);
    struct export_table *table = registry->current ? export_table_ref(registry->current) : NULL;
    pthread_mutex_unlock(&registry->lock);
    return table;
}

/* The export of old with exactly this configuration, if any. */

static void bdev_event_log(void *opaque, const char *message)
{
    (void)opaque;
    log_warn("%s", message);
}
static struct export *find_unchanged(const struct export_table *old, const struct export_config *config)
{
    if (!old)
        return NULL;
    struct export *export = export_table_find(old, config->name);
    if (export && export_config_equal(&export->config, config))
        return export;
    return NULL;
}

/*
 * A reload is how an administrator says "the disk grew" (truncate, lvextend):
 * new NBD clients see the new size, iSCSI initiators get CAPACITY DATA HAS
 * CHANGED at their next command (the SCSI core notices the bdev's size).
 */
static void follow_size(struct export *export)
{
    uint64_t before = bdev_size(export->bdev), now = 0;
    int rc = bdev_refresh_size(export->bdev, &now);
    if (rc == 1)
        log_info("export '%s': grew from %llu to %llu bytes", export->config.name, (unsigned long long)before,
                 (unsigned long long)now);
    else if (rc == -EBUSY)
        log_warn("export '%s': %s shrank to %llu bytes; still serving %llu bytes until the export is reopened",
                 export->config.name, export->config.bdev.path, (unsigned long long)now,
                 (unsigned long long)before);
    else if (rc < 0 && rc != -EOPNOTSUPP)
        log_warn("export '%s': cannot read the size of %s: %s", export->config.name, export->config.bdev.path,
                 strerror(-rc));
}

static bool is_withheld(const struct export_registry *registry, const char *name)
{
    for (size_t i = 0; i < registry->withheld_count; i++)
        if (strcmp(registry->withheld[i], name) == 0)
            return true;
    return false;
}

/* Make table current and drop the previous one. */
static void make_current(struct export_registry *registry, struct export_table *table)
{
    pthread_mutex_lock(&registry->lock);
    struct export_table *previous = registry->current;
    registry->current = table;
    pthread_mutex_unlock(&registry->lock);
    if (previous)
        export_table_unref(previous);
}

int export_registry_publish(struct export_registry *registry,
                            const struct export_config *configs, size_t count,
                            char **error_message)
{
    struct export_table *old = export_registry_current(registry);
    struct export_table *table = export_table_new();
    int ret = table ? 0 : -ENOMEM;

    for (size_t i = 0; i < count && ret == 0; i++) {
        if (is_withheld(registry, configs[i].name)) {
            log_info("export '%s': left out while an overlay is committed into its image", configs[i].name);
            continue;
        }
        struct export *export = find_unchanged(old, &configs[i]);
        if (export) {
            export_ref(export);
            follow_size(export);
        } else {
            struct export_config config = configs[i];
            config.bdev.event = bdev_event_log; /* a remote disk's drops and reconnections */
            ret = export_open(&config, &export, error_message);
            if (ret < 0)
                break;
            if (export->bdev->notice)
                log_warn("export '%s': %s: %s", configs[i].name, configs[i].bdev.path, export->bdev->notice);
            if (old)
                log_info("export '%s': opened %s", configs[i].name, configs[i].bdev.path);
        }
        ret = export_table_add(table, export);
        if (ret < 0)
            export_unref(export);
    }
    if (ret == -ENOMEM && error_message && !*error_message)
        *error_message = strdup("out of memory building the export table");

    if (ret < 0) {
        if (table)
            export_table_unref(table);
        if (old)
            export_table_unref(old);
        return ret;
    }

    if (old) {
        for (size_t i = 0; i < old->count; i++)
            if (!export_table_find(table, old->exports[i]->config.name))
                log_info("export '%s': removed (its clients keep it until they disconnect)",
                         old->exports[i]->config.name);
        export_table_unref(old);
    }

    make_current(registry, table);
    return 0;
}

int export_registry_withhold(struct export_registry *registry, const char *name)
{
    if (is_withheld(registry, name))
        return -EBUSY;
    struct export_table *old = export_registry_current(registry);
    if (!old || !export_table_find(old, name)) {
        if (old)
            export_table_unref(old);
        return -ENOENT;
    }
    char **grown = realloc(registry->withheld, (registry->withheld_count + 1) * sizeof(*grown));
    char *copy = strdup(name);
    struct export_table *table = export_table_new();
    int ret = grown && copy && table ? 0 : -ENOMEM;
    if (grown)
        registry->withheld = grown;
    for (size_t i = 0; i < old->count && ret == 0; i++) {
        struct export *export = old->exports[i];
        if (strcmp(export->config.name, name) == 0)
            continue;
        ret = export_table_add(table, export_ref(export));
        if (ret < 0)
            export_unref(export);
    }
    export_table_unref(old);
    if (ret < 0) {
        free(copy);
        if (table)
            export_table_unref(table);
        return ret;
    }
    registry->withheld[registry->withheld_count++] = copy;
    make_current(registry, table);
    return 0;
}

void export_registry_restore(struct export_registry *registry, const char *name)
{
    for (size_t i = 0; i < registry->withheld_count; i++) {
        if (strcmp(registry->withheld[i], name) == 0) {
            free(registry->withheld[i]);
            registry->withheld[i] = registry->withheld[--registry->withheld_count];
            return;
        }
    }
}
