/*
 * listener: the sockets lunad accepts NBD and iSCSI clients on.
 *
 * TCP (IPv4 and IPv6) and Unix sockets from the configuration, or the
 * sockets systemd passes (LISTEN_FDS, NBD).  Each listener knows the
 * protocol its clients speak.  Accepting runs on the main loop;
 * each accepted socket is made non-blocking, gets TCP_NODELAY (replies are
 * small and latency-bound) and goes to the worker with the fewest
 * connections.
 */
#ifndef LUNA_SERVER_LISTENER_H
#define LUNA_SERVER_LISTENER_H

#include <stddef.h>

#include "config/config.h"

struct ev_loop;
struct worker;
struct listener_set;
struct iscsi_settings;

/*
 * Open every listener of config (or adopt systemd's sockets when present)
 * and start accepting on loop; iSCSI connections are served with iscsi,
 * which must outlive the set.  On failure -errno and a malloc'd message.
 */
int listener_set_open(const struct lunad_config *config, const struct iscsi_settings *iscsi,
                      struct ev_loop *loop, struct worker **workers, size_t worker_count,
                      struct listener_set **out, char **error_message);

/* Stop accepting and close the sockets (unlinking our Unix socket files). */
void listener_set_close(struct listener_set *set);

/* Human-readable list of what we listen on ("127.0.0.1:10809, /run/lunad.sock"). */
const char *listener_set_describe(const struct listener_set *set);

#endif
