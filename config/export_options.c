/*
 * Export keys ([export NAME] in a file, NAME=PATH,key=value on --export):
 * one table, so both spell and check every key the same way.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

static const char *const option_names[EXPORT_OPTION_COUNT] = {
    [EXPORT_OPTION_PATH] = "path",
    [EXPORT_OPTION_FORMAT] = "format",
    [EXPORT_OPTION_READONLY] = "readonly",
    [EXPORT_OPTION_CACHE] = "cache",
    [EXPORT_OPTION_AIO] = "aio",
    [EXPORT_OPTION_DISCARD] = "discard",
    [EXPORT_OPTION_DESCRIPTION] = "description",
    [EXPORT_OPTION_CREATE_SIZE] = "create_size",
    [EXPORT_OPTION_L2_CACHE_SIZE] = "l2_cache_size",
    [EXPORT_OPTION_OVERLAY] = "overlay",
    [EXPORT_OPTION_LVM_DEVICES] = "lvm_devices",
    [EXPORT_OPTION_RECONNECT_TIMEOUT] = "reconnect_timeout",
};

/* NBD limits export names to 4096 bytes. */
#define EXPORT_NAME_MAX 4096

int export_option_lookup(const char *key)
{
    char normalized[32];
    size_t length = strlen(key);
    if (length >= sizeof(normalized))
        return -1;
    /* Flags conventionally use dashes (create-size), INI keys underscores. */
    for (size_t i = 0; i <= length; i++)
        normalized[i] = key[i] == '-' ? '_' : key[i];
    for (int i = 0; i < EXPORT_OPTION_COUNT; i++)
        if (strcmp(normalized, option_names[i]) == 0)
            return i;
    return -1;
}

const char *export_option_name(enum export_option option)
{
    return (unsigned)option < EXPORT_OPTION_COUNT ? option_names[option] : "?";
}

int export_config_start(struct export_config *export, const char *name)
{
    *export = (struct export_config){0};
    bdev_options_init(&export->bdev);
    if (name) {
        export->name = strdup(name);
        if (!export->name)
            return -ENOMEM;
    }
    return 0;
}

int export_name_check(const char *name, char **reason)
{
    if (!name || name[0] == '\0') {
        *reason = config_printf("an export needs a name");
        return -EINVAL;
    }
    if (strlen(name) > EXPORT_NAME_MAX) {
        *reason = config_printf("export name longer than %d bytes", EXPORT_NAME_MAX);
        return -EINVAL;
    }
    return 0;
}

/*
 * "unknown value 'x' (expected a, b, c)", the list taken from the block
 * layer's own names so it can never drift from what it accepts.
 */
static char *unknown_value(const char *value, const char *(*name_of)(int))
{
    char list[256] = "";
    size_t used = 0;
    for (int i = 0;; i++) {
        const char *name = name_of(i);
        if (strcmp(name, "unknown") == 0)
            break;
        int n = snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", name);
        if (n < 0 || (size_t)n >= sizeof(list) - used)
            break;
        used += (size_t)n;
    }
    return config_printf("unknown value '%s' (expected %s)", value, list);
}

static const char *cache_name(int i) { return bdev_cache_mode_name((enum bdev_cache_mode)i); }
static const char *aio_name(int i) { return bdev_aio_engine_name((enum bdev_aio_engine)i); }
static const char *format_name(int i) { return bdev_format_name((enum bdev_format)i); }

/* none | ephemeral[:DIR] | persistent:DIR */
static int parse_overlay(const char *value, struct export_config *export, char **reason)
{
    const char *colon = strchr(value, ':');
    size_t mode_length = colon ? (size_t)(colon - value) : strlen(value);
    const char *dir = colon ? colon + 1 : NULL;
    enum export_overlay mode;
    if (mode_length == 4 && strncmp(value, "none", 4) == 0 && !colon) {
        mode = EXPORT_OVERLAY_NONE;
    } else if (mode_length == 9 && strncmp(value, "ephemeral", 9) == 0) {
        mode = EXPORT_OVERLAY_EPHEMERAL;
    } else if (mode_length == 10 && strncmp(value, "persistent", 10) == 0) {
        mode = EXPORT_OVERLAY_PERSISTENT;
        if (!dir) {
            *reason = config_printf("persistent overlays need a directory (persistent:DIR)");
            return -EINVAL;
        }
    } else {
        *reason = config_printf("unknown value '%s' (expected none, ephemeral, ephemeral:DIR, persistent:DIR)",
                                value);
        return -EINVAL;
    }
    if (dir && dir[0] != '/') {
        *reason = config_printf("the overlay directory must be an absolute path (got '%s')", dir);
        return -EINVAL;
    }
    export->overlay = mode;
    if (!dir) {
        free(export->overlay_dir);
        export->overlay_dir = NULL;
        return 0;
    }
    return config_replace_string(&export->overlay_dir, dir);
}

static int parse_discard(const char *value, bool *out, char **reason)
{
    /* qemu's -drive discard= spells it unmap/ignore; on/off are its aliases. */
    if (strcmp(value, "unmap") == 0 || strcmp(value, "on") == 0) {
        *out = true;
        return 0;
    }
    if (strcmp(value, "ignore") == 0 || strcmp(value, "off") == 0) {
        *out = false;
        return 0;
    }
    *reason = config_printf("unknown value '%s' (expected unmap, ignore, on, off)", value);
    return -EINVAL;
}

int export_option_set(struct export_config *export, enum export_option option, const char *value,
                      char **reason)
{
    *reason = NULL;
    if (value[0] == '\0') {
        *reason = config_printf("empty value");
        return -EINVAL;
    }
    struct bdev_options *bdev = &export->bdev;
    switch (option) {
    case EXPORT_OPTION_PATH: {
        char *path = (char *)bdev->path;
        int ret = config_replace_string(&path, value);
        bdev->path = path;
        return ret;
    }
    case EXPORT_OPTION_FORMAT:
        if (bdev_format_parse(value, &bdev->format) < 0) {
            *reason = unknown_value(value, format_name);
            return -EINVAL;
        }
        return 0;
    case EXPORT_OPTION_READONLY:
        return config_parse_bool(value, &bdev->readonly, reason);
    case EXPORT_OPTION_CACHE:
        if (bdev_cache_mode_parse(value, &bdev->cache) < 0) {
            *reason = unknown_value(value, cache_name);
            return -EINVAL;
        }
        return 0;
    case EXPORT_OPTION_AIO:
        if (bdev_aio_engine_parse(value, &bdev->aio) < 0) {
            *reason = unknown_value(value, aio_name);
            return -EINVAL;
        }
        return 0;
    case EXPORT_OPTION_DISCARD:
        return parse_discard(value, &bdev->discard, reason);
    case EXPORT_OPTION_DESCRIPTION:
        return config_replace_string(&export->description, value);
    case EXPORT_OPTION_CREATE_SIZE: {
        int ret = config_parse_size(value, &bdev->create_size, reason);
        if (ret == 0)
            bdev->create_size_set = true;
        return ret;
    }
    case EXPORT_OPTION_L2_CACHE_SIZE:
        return config_parse_size(value, &bdev->l2_cache_size, reason);
    case EXPORT_OPTION_OVERLAY:
        return parse_overlay(value, export, reason);
    case EXPORT_OPTION_LVM_DEVICES: {
        char *devices = (char *)bdev->lvm_devices;
        int ret = config_replace_string(&devices, value);
        bdev->lvm_devices = devices;
        return ret;
    }
    case EXPORT_OPTION_RECONNECT_TIMEOUT: {
        unsigned seconds;
        int ret = config_parse_seconds(value, 1, 86400, &seconds, reason);
        if (ret == 0)
            bdev->reconnect_timeout = seconds;
        return ret;
    }
    case EXPORT_OPTION_COUNT:
        break;
    }
    *reason = config_printf("unknown key");
    return -EINVAL;
}

int export_config_check(const struct export_config *export, enum export_option *culprit,
                        char **reason)
{
    *reason = NULL;
    if (!export->bdev.path || export->bdev.path[0] == '\0') {
        *culprit = EXPORT_OPTION_PATH;
        *reason = config_printf("missing (every export needs a path)");
        return -EINVAL;
    }
    if (export->bdev.create_size_set && export->bdev.format != BDEV_FORMAT_RAW &&
        export->bdev.format != BDEV_FORMAT_AUTO) {
        *culprit = EXPORT_OPTION_CREATE_SIZE;
        *reason = config_printf("only raw image files can be created (format is %s)",
                                bdev_format_name(export->bdev.format));
        return -EINVAL;
    }
    if (export->overlay != EXPORT_OVERLAY_NONE && export->bdev.readonly) {
        *culprit = EXPORT_OPTION_OVERLAY;
        *reason = config_printf("clients write to their overlays: readonly=on contradicts it");
        return -EINVAL;
    }
    if (export->bdev.lvm_devices && export->bdev.format != BDEV_FORMAT_LVM &&
        export->bdev.format != BDEV_FORMAT_QCOW2) {
        *culprit = EXPORT_OPTION_LVM_DEVICES;
        *reason = config_printf("only LVM volumes (format lvm, or qcow2 inside one) are read from lvm_devices "
                                "(format is %s)",
                                bdev_format_name(export->bdev.format));
        return -EINVAL;
    }
    if (export->bdev.l2_cache_size && export->bdev.format != BDEV_FORMAT_QCOW2) {
        *culprit = EXPORT_OPTION_L2_CACHE_SIZE;
        *reason = config_printf("only qcow2 images have an L2 cache (format is %s)",
                                bdev_format_name(export->bdev.format));
        return -EINVAL;
    }
    return 0;
}
