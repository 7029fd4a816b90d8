/*
 * monitor: the human monitor on a Unix socket (-monitor unix:PATH,server,nowait),
 * served from the I/O thread's loop.
 *
 * Clients get QEMU's greeting and "(qemu) " prompt (so scripts written for
 * QEMU's monitor find what they wait for), send one command per line and
 * get monitor_commands' reply.  Several clients may be connected; the
 * socket file is removed when the monitor closes.  The monitor on the
 * console (-monitor stdio, the default) is the console's (console_monitor.c),
 * over the same monitor_commands.
 */
#ifndef LUNA_VMM_MONITOR_H
#define LUNA_VMM_MONITOR_H

#include <ev.h>
#include <stdbool.h>

#include "vmm/monitor_commands.h"

struct monitor_client;

struct monitor {
    int listen_fd;
    char *path;
    struct ev_loop *loop;
    ev_io accept_watcher;
    struct monitor_client *clients;
    const struct monitor_target *target;
};

/*
 * Parse a -monitor value and, for a socket, bind and listen (before the
 * VM starts, so a client can connect as soon as lunavm runs).  "none"
 * leaves the monitor closed.  0 or -errno with a message.
 */
int monitor_open(struct monitor *monitor, const char *spec, const struct monitor_target *target,
                 char **error_message);
/* True when the monitor is on the console (no -monitor: QEMU's -nographic default, or "stdio"). */
bool monitor_spec_on_console(const char *spec);

/* Check a -monitor value without opening anything (command-line parsing).  0 or -EINVAL with a message. */
int monitor_check_spec(const char *spec, char **error_message);

/* On the I/O thread. */
void monitor_attach(struct monitor *monitor, struct ev_loop *loop);
void monitor_detach(struct monitor *monitor);

/* Close the socket and remove its file (after detach). */
void monitor_close(struct monitor *monitor);

#endif
