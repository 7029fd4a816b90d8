/*
 * admin: lunad's administration socket, which lunactl talks to.
 *
 * A Unix stream socket (mode 0600: whoever may use it may discard or
 * merge a machine's disk) served on lunad's main loop, beside the
 * listeners and the signals.  Requests and replies are JSON objects, one
 * per line; a connection sends its next request once the previous reply
 * came (a request sent earlier waits).  A line that is not JSON gets an
 * error reply and the connection stays usable.  What the requests mean is
 * admin_commands.h's business.
 */
#ifndef LUNA_SERVER_ADMIN_H
#define LUNA_SERVER_ADMIN_H

struct ev_loop;
struct export_registry;
struct lunad_config;
struct admin;

/*
 * Listen on path (replacing a socket file left by an earlier run, never
 * one another process still answers on).  config is lunad's configuration
 * object, current across reloads.  0, or -errno and a malloc'd message.
 */
int admin_open(const char *path, struct ev_loop *loop, struct export_registry *registry,
               const struct lunad_config *config, struct admin **out, char **error_message);

/*
 * Stop accepting, close the connections, wait for commands still running
 * (a commit finishes), remove the socket file, free.  NULL is ignored.
 */
void admin_close(struct admin *admin);

#endif
