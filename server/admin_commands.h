/*
 * admin_commands: what lunactl can ask lunad, one JSON request at a time.
 *
 * A request is a JSON object {"command": NAME, ...arguments}; its reply is
 * {"return": VALUE} or {"error": {"class": CLASS, "desc": TEXT}}, CLASS
 * one of "invalid" (a malformed request), "not-found", "busy" (clients use
 * what the command needs to itself) and "failed".  Commands that touch
 * files or the overlays' locks run on the thread pool, so the owning loop
 * (lunad's main loop: listeners, signals, reloads) never blocks; their
 * replies come back on that loop.  The commands are described in
 * docs/lunad.md.
 */
#ifndef LUNA_SERVER_ADMIN_COMMANDS_H
#define LUNA_SERVER_ADMIN_COMMANDS_H

#include <json-c/json.h>

struct ev_loop;
struct export_registry;
struct lunad_config;
struct admin_commands;
struct admin_command;

/*
 * registry: the exports served; config: lunad's current configuration
 * (the same object across reloads), from which an export taken out of
 * service for a commit is opened again.  Loop thread.  NULL when out of
 * memory.
 */
struct admin_commands *admin_commands_new(struct ev_loop *loop, struct export_registry *registry,
                                          const struct lunad_config *config);

/*
 * Wait (running the loop) for the commands still running on the pool,
 * then free.  A commit under way is finished, not interrupted: stopping
 * halfway would leave the image half merged.
 */
void admin_commands_free(struct admin_commands *commands);

/* Receives a reply it then owns (json_object_put); runs on the loop thread. */
typedef void admin_reply_fn(void *opaque, struct json_object *reply);

/*
 * Start request (borrowed).  reply(opaque, ...) runs exactly once, unless
 * the command is cancelled: later, or before this returns when the answer
 * is known at once (then the result is NULL).  Otherwise the result names
 * the command for admin_command_cancel.
 */
struct admin_command *admin_command_start(struct admin_commands *commands, struct json_object *request,
                                          admin_reply_fn *reply, void *opaque);

/* The asker is gone: reply will not run; the command itself still completes. */
void admin_command_cancel(struct admin_command *command);

/* {"error": {"class": error_class, "desc": description}}; NULL when out of memory. */
struct json_object *admin_error_reply(const char *error_class, const char *description);

#endif
