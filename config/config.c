/*
 * The lunad_config object: life cycle, building helpers, cross-field
 * validation and the embedded default.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "config/config_internal.h"

static const char default_text[] =
    "; lunad's embedded default: used when lunad is started without arguments.\n"
    "[server]\n"
    "nbd_listen = 127.0.0.1:10809\n"
    "\n"
    "[export demo]\n"
    "path = var/demo.img\n"
    "create_size = 1G\n"
    "description = \"luna demo disk (1 GiB, sparse)\"\n";

const char *lunad_config_default_text(void)
{
    return default_text;
}

char *config_printf(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    char *text = NULL;
    int n = vasprintf(&text, format, args);
    va_end(args);
    return n < 0 ? NULL : text;
}

const char *config_reason_text(const char *reason)
{
    return reason ? reason : "invalid value (and out of memory describing why)";
}

void lunad_config_init(struct lunad_config *config)
{
    *config = (struct lunad_config){
        .workers = 0,
        .log_level = LOG_LEVEL_INFO,
        .iscsi_ping_interval = (unsigned)ISCSI_DEFAULT_PING_INTERVAL,
    };
}

/* A list of listen addresses (nbd_listen, iscsi_listen): emptied, or one taken over at its end. */
static void listen_list_clear(struct listen_address **list, size_t *count)
{
    for (size_t i = 0; i < *count; i++)
        listen_address_clear(&(*list)[i]);
    free(*list);
    *list = NULL;
    *count = 0;
}

static int listen_list_add(struct listen_address **list, size_t *count, struct listen_address *address)
{
    if (config_grow((void **)list, *count, sizeof(**list)) < 0)
        return -ENOMEM;
    (*list)[(*count)++] = *address;
    *address = (struct listen_address){0};
    return 0;
}

void lunad_config_clear_nbd_listen(struct lunad_config *config)
{
    listen_list_clear(&config->nbd_listen, &config->nbd_listen_count);
}

void lunad_config_clear_iscsi_listen(struct lunad_config *config)
{
    listen_list_clear(&config->iscsi_listen, &config->iscsi_listen_count);
}

void lunad_config_clear_unix_sockets(struct lunad_config *config)
{
    for (size_t i = 0; i < config->unix_socket_count; i++)
        free(config->unix_sockets[i]);
    free(config->unix_sockets);
    config->unix_sockets = NULL;
    config->unix_socket_count = 0;
}

void lunad_config_clear(struct lunad_config *config)
{
    lunad_config_clear_nbd_listen(config);
    lunad_config_clear_iscsi_listen(config);
    lunad_config_clear_unix_sockets(config);
    lunad_config_clear_targets(config);
    iscsi_chap_clear(&config->discovery_chap);
    for (size_t i = 0; i < config->export_count; i++)
        export_config_clear(&config->exports[i]);
    free(config->exports);
    free(config->pidfile);
    free(config->state_dir);
    free(config->admin_socket);
    free(config->source);
    lunad_config_init(config);
}

int config_grow(void **array, size_t count, size_t element_size)
{
    void *bigger = realloc(*array, (count + 1) * element_size);
    if (!bigger)
        return -ENOMEM;
    *array = bigger;
    return 0;
}

int config_replace_string(char **slot, const char *value)
{
    char *copy = strdup(value);
    if (!copy)
        return -ENOMEM;
    free(*slot);
    *slot = copy;
    return 0;
}

int lunad_config_add_nbd_listen(struct lunad_config *config, struct listen_address *address)
{
    return listen_list_add(&config->nbd_listen, &config->nbd_listen_count, address);
}

int lunad_config_add_iscsi_listen(struct lunad_config *config, struct listen_address *address)
{
    return listen_list_add(&config->iscsi_listen, &config->iscsi_listen_count, address);
}

int lunad_config_add_unix_socket(struct lunad_config *config, const char *path)
{
    char *copy = strdup(path);
    if (!copy ||
        config_grow((void **)&config->unix_sockets, config->unix_socket_count, sizeof(*config->unix_sockets)) < 0) {
        free(copy);
        return -ENOMEM;
    }
    config->unix_sockets[config->unix_socket_count++] = copy;
    return 0;
}

int lunad_config_add_export(struct lunad_config *config, struct export_config *export)
{
    if (config_grow((void **)&config->exports, config->export_count, sizeof(*config->exports)) < 0)
        return -ENOMEM;
    config->exports[config->export_count++] = *export;
    *export = (struct export_config){0};
    return 0;
}

long lunad_config_find_export(const struct lunad_config *config, const char *name)
{
    for (size_t i = 0; i < config->export_count; i++)
        if (config->exports[i].name && strcmp(config->exports[i].name, name) == 0)
            return (long)i;
    return -1;
}

/*
 * With socket activation systemd owns the listening sockets and lunad
 * ignores nbd_listen / unix_socket, so a configuration without them is
 * complete there.
 */
static bool socket_activated(void)
{
    /* As sd_listen_fds(): the sockets are ours only if LISTEN_PID names us. */
    const char *fds = getenv("LISTEN_FDS");
    const char *pid = getenv("LISTEN_PID");
    if (!fds || !fds[0] || strcmp(fds, "0") == 0)
        return false;
    return !pid || strtol(pid, NULL, 10) == (long)getpid();
}

int lunad_config_validate(const struct lunad_config *config, char **error_message)
{
    if (error_message)
        *error_message = NULL;
    const char *source = config->source ? config->source : "configuration";

    if (config->export_count == 0)
        return error_message_set(error_message, -EINVAL,
                           "%s: no export (add an [export NAME] section with a path, "
                           "or --export NAME=PATH)",
                           source);
    if (config->nbd_listen_count == 0 && config->unix_socket_count == 0 && config->iscsi_listen_count == 0 &&
        !socket_activated())
        return error_message_set(error_message, -EINVAL,
                           "%s: no listener (add nbd_listen, unix_socket or iscsi_listen to [server], "
                           "or --nbd ADDR:PORT / --unix PATH / --iscsi ADDR:PORT)",
                           source);
    if (config->workers > LUNA_WORKERS_MAX)
        return error_message_set(error_message, -EINVAL, "%s: workers: %u is more than %d", source,
                           config->workers, LUNA_WORKERS_MAX);

    for (size_t i = 0; i < config->export_count; i++) {
        const struct export_config *export = &config->exports[i];
        char *reason = NULL;
        if (export_name_check(export->name, &reason) < 0) {
            int ret = error_message_set(error_message, -EINVAL, "%s: export name: %s", source,
                                  config_reason_text(reason));
            free(reason);
            return ret;
        }
        enum export_option culprit;
        if (export_config_check(export, &culprit, &reason) < 0) {
            int ret = error_message_set(error_message, -EINVAL, "%s: [export %s] %s: %s", source,
                                  export->name, export_option_name(culprit),
                                  config_reason_text(reason));
            free(reason);
            return ret;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(config->exports[j].name, export->name) == 0)
                return error_message_set(error_message, -EINVAL, "%s: export '%s' is defined twice",
                                   source, export->name);
    }

    for (size_t i = 0; i < config->unix_socket_count; i++) {
        char *reason = NULL;
        if (config_check_unix_socket(config->unix_sockets[i], &reason) < 0) {
            int ret = error_message_set(error_message, -EINVAL, "%s: unix_socket: %s", source,
                                  config_reason_text(reason));
            free(reason);
            return ret;
        }
    }
    int ret = lunad_config_validate_targets(config, source, error_message);
    if (ret < 0)
        return ret;
    for (size_t i = 0; config->admin_socket && i < config->unix_socket_count; i++)
        if (strcmp(config->unix_sockets[i], config->admin_socket) == 0)
            return error_message_set(error_message, -EINVAL,
                                     "%s: admin_socket: %s is also an NBD unix_socket", source,
                                     config->admin_socket);
    return 0;
}
