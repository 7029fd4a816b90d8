#include "server/admin_commands.h"

#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/export.h"
#include "block/overlay.h"
#include "block/threadpool.h"
#include "common/error_message.h"
#include "common/log.h"
#include "config/config.h"
#include "server/export_registry.h"

enum command_kind {
    COMMAND_EXPORTS,
    COMMAND_OVERLAY_LIST,
    COMMAND_OVERLAY_RESET,
    COMMAND_OVERLAY_COMMIT,
};

static const struct {
    const char *name;
    bool needs_export;
    bool needs_identity;
} command_table[] = {
    [COMMAND_EXPORTS] = {"exports", false, false},
    [COMMAND_OVERLAY_LIST] = {"overlay-list", true, false},
    [COMMAND_OVERLAY_RESET] = {"overlay-reset", true, true},
    [COMMAND_OVERLAY_COMMIT] = {"overlay-commit", true, true},
};
#define COMMAND_COUNT (sizeof(command_table) / sizeof(command_table[0]))

/*
 * A commit goes loop → pool → loop → pool → loop: the checks and the claim
 * need the views lock (pool), taking the export out of service is the
 * registry's business (loop, as reloads are), the merge is long (pool),
 * and putting the export back publishes again (loop).
 */
enum command_phase {
    PHASE_ONLY,          /* every command but commit: one pool step */
    PHASE_COMMIT_CLAIM,
    PHASE_COMMIT_MERGE,
};

struct admin_command {
    struct threadpool_job job; /* first: the pool hands this back */
    struct admin_command *next_finished;
    struct admin_commands *commands;
    enum command_kind kind;
    enum command_phase phase;
    admin_reply_fn *reply;
    void *opaque;
    bool cancelled;

    struct export_table *table; /* exports: the table listed */
    struct export *export;      /* the export named, one reference */
    char *export_name;
    char *identity;
    struct export_config base_config; /* commit: the retired export's configuration */
    uint64_t committed_bytes;

    int result;
    char *message;
    struct json_object *value; /* the "return" value on success */
};

struct admin_commands {
    struct ev_loop *loop;
    struct export_registry *registry;
    const struct lunad_config *config;
    ev_async finished_async;
    pthread_mutex_t lock; /* guards finished */
    struct admin_command *finished;
    unsigned running; /* loop thread: commands not yet done */
};

struct json_object *admin_error_reply(const char *error_class, const char *description)
{
    struct json_object *error = json_object_new_object();
    struct json_object *reply = json_object_new_object();
    if (!error || !reply || json_object_object_add(error, "class", json_object_new_string(error_class)) < 0 ||
        json_object_object_add(error, "desc", json_object_new_string(description)) < 0 ||
        json_object_object_add(reply, "error", error) < 0) {
        json_object_put(error);
        json_object_put(reply);
        return NULL;
    }
    return reply;
}

static const char *error_class_of(int result)
{
    switch (result) {
    case -EINVAL:
        return "invalid";
    case -ENOENT:
        return "not-found";
    case -EBUSY:
        return "busy";
    default:
        return "failed";
    }
}

static void command_free(struct admin_command *command)
{
    if (command->table)
        export_table_unref(command->table);
    if (command->export)
        export_unref(command->export);
    export_config_clear(&command->base_config);
    free(command->export_name);
    free(command->identity);
    free(command->message);
    json_object_put(command->value);
    free(command);
}

/* Answer the asker (unless it left) and free the command. */
static void command_finish(struct admin_command *command)
{
    struct admin_commands *commands = command->commands;
    if (!command->cancelled) {
        struct json_object *reply;
        if (command->result < 0) {
            reply = admin_error_reply(error_class_of(command->result),
                                      command->message ? command->message : strerror(-command->result));
        } else {
            reply = json_object_new_object();
            if (reply && json_object_object_add(reply, "return", command->value) == 0)
                command->value = NULL;
            else if (reply) {
                json_object_put(reply);
                reply = NULL;
            }
        }
        command->reply(command->opaque, reply);
    }
    command_free(command);
    commands->running--;
}

/* ---- pool side ---- */

static int add_string(struct json_object *object, const char *key, const char *value)
{
    struct json_object *string = value ? json_object_new_string(value) : NULL;
    if (value && !string)
        return -ENOMEM;
    return json_object_object_add(object, key, string) < 0 ? -ENOMEM : 0;
}

static int add_number(struct json_object *object, const char *key, uint64_t value)
{
    struct json_object *number = json_object_new_uint64(value);
    return number && json_object_object_add(object, key, number) == 0 ? 0 : -ENOMEM;
}

static const char *overlay_mode_name(enum export_overlay overlay)
{
    switch (overlay) {
    case EXPORT_OVERLAY_EPHEMERAL:
        return "ephemeral";
    case EXPORT_OVERLAY_PERSISTENT:
        return "persistent";
    case EXPORT_OVERLAY_NONE:
    default:
        return "none";
    }
}

/*
 * Connections using an export.  With overlays, each connection holds a
 * view, counted exactly.  Without, each holds a reference to the export,
 * and the current table one more; a reload leaves older tables with
 * clients still negotiating, which then count as well.
 */
static unsigned export_clients(struct export *export)
{
    if (export->config.overlay != EXPORT_OVERLAY_NONE)
        return overlay_clients(export);
    int references = __atomic_load_n(&export->refcount, __ATOMIC_RELAXED);
    return references > 1 ? (unsigned)(references - 1) : 0;
}

static int describe_export(struct export *export, struct json_object *list)
{
    struct json_object *item = json_object_new_object();
    if (!item)
        return -ENOMEM;
    const struct export_config *config = &export->config;
    int rc = add_string(item, "name", config->name);
    if (rc == 0)
        rc = add_string(item, "path", config->bdev.path);
    if (rc == 0)
        rc = add_string(item, "format", export->bdev->ops->name);
    if (rc == 0)
        rc = add_number(item, "size", bdev_size(export->bdev));
    if (rc == 0)
        rc = json_object_object_add(item, "readonly", json_object_new_boolean(export->readonly)) < 0 ? -ENOMEM : 0;
    if (rc == 0)
        rc = add_string(item, "overlay", overlay_mode_name(config->overlay));
    if (rc == 0)
        rc = add_string(item, "overlay_dir", config->overlay_dir);
    if (rc == 0)
        rc = add_number(item, "clients", export_clients(export));
    if (rc == 0 && json_object_array_add(list, item) < 0)
        rc = -ENOMEM;
    if (rc < 0)
        json_object_put(item);
    return rc;
}

static int run_exports(struct admin_command *command)
{
    struct json_object *list = json_object_new_array();
    int rc = list ? 0 : -ENOMEM;
    for (size_t i = 0; i < command->table->count && rc == 0; i++)
        rc = describe_export(command->table->exports[i], list);
    command->value = json_object_new_object();
    if (rc == 0 && (!command->value || json_object_object_add(command->value, "exports", list) < 0))
        rc = -ENOMEM;
    if (rc < 0)
        json_object_put(list);
    return rc;
}

static int describe_overlay(const struct overlay_entry *entry, struct json_object *list)
{
    struct json_object *item = json_object_new_object();
    if (!item)
        return -ENOMEM;
    int rc = add_string(item, "identity", entry->identity);
    if (rc == 0)
        rc = add_string(item, "file", entry->path);
    if (rc == 0 && entry->path)
        rc = add_number(item, "disk_bytes", entry->disk_bytes);
    if (rc == 0 && entry->path)
        rc = add_number(item, "file_bytes", entry->file_bytes);
    if (rc == 0)
        rc = add_number(item, "clients", entry->clients);
    if (rc == 0 && json_object_array_add(list, item) < 0)
        rc = -ENOMEM;
    if (rc < 0)
        json_object_put(item);
    return rc;
}

static int run_overlay_list(struct admin_command *command)
{
    struct overlay_entry *entries = NULL;
    size_t count = 0;
    int rc = overlay_list(command->export, &entries, &count, &command->message);
    if (rc < 0)
        return rc;
    struct json_object *list = json_object_new_array();
    rc = list ? 0 : -ENOMEM;
    for (size_t i = 0; i < count && rc == 0; i++)
        rc = describe_overlay(&entries[i], list);
    overlay_list_free(entries, count);
    command->value = json_object_new_object();
    if (rc == 0 && (!command->value || add_string(command->value, "export", command->export_name) < 0 ||
                    add_string(command->value, "overlay", overlay_mode_name(command->export->config.overlay)) < 0 ||
                    json_object_object_add(command->value, "overlays", list) < 0))
        rc = -ENOMEM;
    if (rc < 0)
        json_object_put(list);
    return rc;
}

/* The identity and export a reset or commit answers with. */
static int identity_value(struct admin_command *command)
{
    command->value = json_object_new_object();
    if (!command->value || add_string(command->value, "export", command->export_name) < 0 ||
        add_string(command->value, "identity", command->identity) < 0)
        return -ENOMEM;
    return 0;
}

static void commit_progress(void *opaque, uint64_t done, uint64_t total)
{
    (void)total;
    struct admin_command *command = opaque;
    command->committed_bytes = done;
}

static void command_run(struct threadpool_job *job)
{
    struct admin_command *command = (struct admin_command *)job;
    int rc = 0;
    switch (command->kind) {
    case COMMAND_EXPORTS:
        rc = run_exports(command);
        break;
    case COMMAND_OVERLAY_LIST:
        rc = run_overlay_list(command);
        break;
    case COMMAND_OVERLAY_RESET:
        rc = overlay_reset(command->export, command->identity, &command->message);
        if (rc == 0)
            rc = identity_value(command);
        break;
    case COMMAND_OVERLAY_COMMIT:
        if (command->phase == PHASE_COMMIT_CLAIM) {
            rc = overlay_commit_claim(command->export, command->identity, &command->message);
            if (rc == 0 && export_config_copy(&command->base_config, &command->export->config) < 0) {
                overlay_commit_abandon(command->export);
                rc = -ENOMEM;
            }
        } else {
            rc = overlay_commit_run(&command->base_config, command->identity, commit_progress, command,
                                    &command->message);
            if (rc == 0 && (rc = identity_value(command)) == 0)
                rc = add_number(command->value, "bytes", command->committed_bytes);
        }
        break;
    }
    if (rc == -ENOMEM && !command->message)
        command->message = strdup("out of memory");
    command->result = rc;

    struct admin_commands *commands = command->commands;
    pthread_mutex_lock(&commands->lock);
    command->next_finished = commands->finished;
    commands->finished = command;
    pthread_mutex_unlock(&commands->lock);
    ev_async_send(commands->loop, &commands->finished_async);
}

/* ---- loop side ---- */

static int submit(struct admin_command *command)
{
    command->job.run = command_run;
    int rc = threadpool_submit(&command->job);
    if (rc < 0) {
        command->result = rc;
        free(command->message);
        command->message = strdup("lunad cannot start a thread for this command now");
    }
    return rc;
}

static void commit_failed_after_claim(struct admin_command *command)
{
    overlay_commit_abandon(command->export);
}

/*
 * The claim holds: take the export out of service so that its read-only
 * open of the image goes with its last user, then merge on the pool.
 */
static void commit_claimed(struct admin_command *command)
{
    struct admin_commands *commands = command->commands;
    int rc = export_registry_withhold(commands->registry, command->export_name);
    if (rc < 0) {
        commit_failed_after_claim(command);
        command->result = rc;
        free(command->message);
        command->message = strdup(rc == -ENOENT ? "the export was removed by a reload meanwhile"
                                                : "cannot take the export out of service");
        command_finish(command);
        return;
    }
    log_info("admin: export '%s' out of service: committing overlay '%s' into %s", command->export_name,
             command->identity, command->base_config.bdev.path);
    /* The retired object keeps its claim for clients still holding it; we let it go. */
    export_unref(command->export);
    command->export = NULL;
    command->phase = PHASE_COMMIT_MERGE;
    if (submit(command) < 0) {
        export_registry_restore(commands->registry, command->export_name);
        command_finish(command);
    }
}

/* Merged or not, the export comes back: a new object, whose open sees the image as it is now. */
static void commit_merged(struct admin_command *command)
{
    struct admin_commands *commands = command->commands;
    export_registry_restore(commands->registry, command->export_name);
    char *message = NULL;
    const struct lunad_config *config = commands->config;
    if (export_registry_publish(commands->registry, config->exports, config->export_count, &message) < 0) {
        log_error("admin: export '%s' cannot be served again: %s", command->export_name,
                  message ? message : "cannot open exports");
        if (command->result == 0) {
            command->result = -EIO;
            free(command->message);
            command->message = NULL;
            if (asprintf(&command->message, "committed, but the export cannot be served again: %s",
                         message ? message : "cannot open exports") < 0)
                command->message = NULL;
        }
    }
    free(message);
    if (command->result == 0)
        log_info("admin: overlay '%s' of export '%s' committed (%" PRIu64 " bytes); export back in service",
                 command->identity, command->export_name, command->committed_bytes);
    else
        log_warn("admin: commit of overlay '%s' of export '%s' failed: %s", command->identity,
                 command->export_name, command->message ? command->message : strerror(-command->result));
    command_finish(command);
}

static void command_done(struct admin_command *command)
{
    if (command->kind == COMMAND_OVERLAY_COMMIT && command->phase == PHASE_COMMIT_CLAIM && command->result == 0) {
        commit_claimed(command);
        return;
    }
    if (command->kind == COMMAND_OVERLAY_COMMIT && command->phase == PHASE_COMMIT_MERGE) {
        commit_merged(command);
        return;
    }
    if (command->kind == COMMAND_OVERLAY_RESET && command->result == 0)
        log_info("admin: overlay '%s' of export '%s' reset", command->identity, command->export_name);
    command_finish(command);
}

static void finished_cb(struct ev_loop *loop, ev_async *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct admin_commands *commands = watcher->data;
    pthread_mutex_lock(&commands->lock);
    struct admin_command *list = commands->finished;
    commands->finished = NULL;
    pthread_mutex_unlock(&commands->lock);
    while (list) {
        struct admin_command *command = list;
        list = list->next_finished;
        command_done(command);
    }
}

struct admin_commands *admin_commands_new(struct ev_loop *loop, struct export_registry *registry,
                                          const struct lunad_config *config)
{
    struct admin_commands *commands = calloc(1, sizeof(*commands));
    if (!commands)
        return NULL;
    commands->loop = loop;
    commands->registry = registry;
    commands->config = config;
    pthread_mutex_init(&commands->lock, NULL);
    ev_async_init(&commands->finished_async, finished_cb);
    commands->finished_async.data = commands;
    ev_async_start(loop, &commands->finished_async);
    /* Not a reason to keep the loop running by itself. */
    ev_unref(loop);
    return commands;
}

void admin_commands_free(struct admin_commands *commands)
{
    if (!commands)
        return;
    ev_ref(commands->loop); /* the loop must wait for the pool's answers now */
    while (commands->running > 0)
        ev_run(commands->loop, EVRUN_ONCE);
    ev_async_stop(commands->loop, &commands->finished_async);
    pthread_mutex_destroy(&commands->lock);
    free(commands);
}

void admin_command_cancel(struct admin_command *command)
{
    command->cancelled = true;
}

/* A string member of request, or NULL (with a message) when absent or not a string. */
static const char *string_argument(struct json_object *request, const char *key, char **message)
{
    struct json_object *value;
    if (!json_object_object_get_ex(request, key, &value) || !json_object_is_type(value, json_type_string)) {
        if (asprintf(message, "'%s' (a string) is required", key) < 0)
            *message = NULL;
        return NULL;
    }
    return json_object_get_string(value);
}

/* The command request names, with its arguments checked; -EINVAL with a message otherwise. */
static int parse_request(struct json_object *request, struct admin_command *command)
{
    if (!json_object_is_type(request, json_type_object))
        return error_message_set(&command->message, -EINVAL, "a request is a JSON object");
    const char *name = string_argument(request, "command", &command->message);
    if (!name)
        return -EINVAL;
    size_t kind = 0;
    while (kind < COMMAND_COUNT && strcmp(command_table[kind].name, name) != 0)
        kind++;
    if (kind == COMMAND_COUNT)
        return error_message_set(&command->message, -EINVAL, "unknown command '%s' (expected exports, overlay-list, "
                                 "overlay-reset, overlay-commit)", name);
    command->kind = (enum command_kind)kind;
    json_object_object_foreach(request, key, value) {
        (void)value;
        bool known = strcmp(key, "command") == 0 || (strcmp(key, "export") == 0 && command_table[kind].needs_export) ||
                     (strcmp(key, "identity") == 0 && command_table[kind].needs_identity);
        if (!known)
            return error_message_set(&command->message, -EINVAL, "%s: unexpected argument '%s'", name, key);
    }
    const char *export_name = NULL, *identity = NULL;
    if (command_table[kind].needs_export && !(export_name = string_argument(request, "export", &command->message)))
        return -EINVAL;
    if (command_table[kind].needs_identity && !(identity = string_argument(request, "identity", &command->message)))
        return -EINVAL;
    if ((export_name && !(command->export_name = strdup(export_name))) ||
        (identity && !(command->identity = strdup(identity))))
        return error_message_set(&command->message, -ENOMEM, "out of memory");
    return 0;
}

struct admin_command *admin_command_start(struct admin_commands *commands, struct json_object *request,
                                          admin_reply_fn *reply, void *opaque)
{
    struct admin_command *command = calloc(1, sizeof(*command));
    if (!command) {
        reply(opaque, admin_error_reply("failed", "out of memory"));
        return NULL;
    }
    command->commands = commands;
    command->reply = reply;
    command->opaque = opaque;
    command->phase = PHASE_ONLY;
    commands->running++;

    int rc = parse_request(request, command);
    if (rc == 0) {
        command->table = export_registry_current(commands->registry);
        if (!command->table)
            rc = error_message_set(&command->message, -ENOENT, "no exports are served yet");
    }
    if (rc == 0 && command->export_name) {
        struct export *export = export_table_find(command->table, command->export_name);
        if (!export)
            rc = error_message_set(&command->message, -ENOENT, "no export '%s'", command->export_name);
        else
            command->export = export_ref(export);
        /*
         * Only listing needs the table; a commit must not hold it: the
         * export's read-only open of the image lasts as long as any table
         * that lists it.
         */
        export_table_unref(command->table);
        command->table = NULL;
    }
    if (rc == 0 && command->kind == COMMAND_OVERLAY_COMMIT)
        command->phase = PHASE_COMMIT_CLAIM;
    if (rc == 0)
        rc = submit(command);
    if (rc < 0) {
        command->result = rc;
        command_finish(command);
        return NULL;
    }
    return command;
}
