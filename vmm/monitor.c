#include "vmm/monitor.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/error_message.h"

#define LINE_MAX_LENGTH 1024
#define REPLY_SIZE 8192
#define GREETING "QEMU-compatible lunavm monitor - type 'help' for more information\n"
#define PROMPT "(qemu) "

struct monitor_client {
    struct monitor *monitor;
    int fd;
    ev_io watcher;
    char line[LINE_MAX_LENGTH];
    size_t length;
    bool discarding; /* the current line is too long: drop it up to its newline */
    struct monitor_client *next;
};

/* "unix:PATH,server,nowait" (or server=on,wait=off); *path_out malloc'd, NULL for "none" and
 * "stdio" (the console's mux serves that one, see console.h). */
static int parse_spec(const char *spec, char **path_out, char **error_message)
{
    *path_out = NULL;
    if (!strcmp(spec, "none") || !strcmp(spec, "stdio"))
        return 0;
    if (strncmp(spec, "unix:", 5) != 0)
        return error_message_set(error_message, -EINVAL,
                                 "-monitor %s: only stdio, unix:PATH,server,nowait or none is supported", spec);
    const char *path = spec + 5;
    const char *comma = strchr(path, ',');
    size_t length = comma ? (size_t)(comma - path) : strlen(path);
    bool server = false, nowait = false;
    for (const char *option = comma; option && *option;) {
        option++;
        const char *end = strchr(option, ',');
        size_t size = end ? (size_t)(end - option) : strlen(option);
        if ((size == 6 && !strncmp(option, "server", 6)) || (size == 9 && !strncmp(option, "server=on", 9)))
            server = true;
        else if ((size == 6 && !strncmp(option, "nowait", 6)) || (size == 8 && !strncmp(option, "wait=off", 8)))
            nowait = true;
        else
            return error_message_set(error_message, -EINVAL, "-monitor %s: unknown option '%.*s'", spec, (int)size,
                                     option);
        option = end;
    }
    if (!server || !nowait)
        return error_message_set(error_message, -EINVAL,
                                 "-monitor %s: lunavm only listens (server) and never waits for a client (nowait)",
                                 spec);
    if (length == 0 || length >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return error_message_set(error_message, -EINVAL, "-monitor %s: socket path empty or too long", spec);
    *path_out = strndup(path, length);
    return *path_out ? 0 : -ENOMEM;
}

bool monitor_spec_on_console(const char *spec)
{
    return !spec || !strcmp(spec, "stdio");
}

int monitor_check_spec(const char *spec, char **error_message)
{
    char *path;
    int ret = parse_spec(spec, &path, error_message);
    free(path);
    return ret;
}

int monitor_open(struct monitor *monitor, const char *spec, const struct monitor_target *target,
                 char **error_message)
{
    memset(monitor, 0, sizeof(*monitor));
    monitor->listen_fd = -1;
    monitor->target = target;
    int ret = parse_spec(spec, &monitor->path, error_message);
    if (ret < 0 || !monitor->path)
        return ret;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return error_message_set(error_message, -errno, "-monitor: socket: %s", strerror(errno));
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    memcpy(address.sun_path, monitor->path, strlen(monitor->path) + 1);
    unlink(monitor->path); /* a stale socket from an earlier run; QEMU does the same */
    if (bind(fd, (struct sockaddr *)&address, sizeof(address)) < 0 || listen(fd, 4) < 0) {
        int error = errno;
        close(fd);
        return error_message_set(error_message, -error, "-monitor: %s: %s", monitor->path, strerror(error));
    }
    monitor->listen_fd = fd;
    return 0;
}

static void send_text(struct monitor_client *client, const char *text)
{
    size_t length = strlen(text);
    while (length) {
        ssize_t sent = send(client->fd, text, length, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent <= 0) /* a client that does not read loses its replies, the VM does not wait */
            return;
        text += sent;
        length -= (size_t)sent;
    }
}

static void drop_client(struct monitor_client *client)
{
    struct monitor *monitor = client->monitor;
    ev_io_stop(monitor->loop, &client->watcher);
    close(client->fd);
    for (struct monitor_client **link = &monitor->clients; *link; link = &(*link)->next)
        if (*link == client) {
            *link = client->next;
            break;
        }
    free(client);
}

/* Returns false when the client is gone. */
static bool run_line(struct monitor_client *client)
{
    client->line[client->length] = '\0';
    char reply[REPLY_SIZE] = "";
    enum monitor_result result = monitor_execute(client->monitor->target, client->line, reply, sizeof(reply));
    client->length = 0;
    send_text(client, reply);
    if (result == MONITOR_CLOSE) {
        drop_client(client);
        return false;
    }
    send_text(client, PROMPT);
    return true;
}

static void client_readable(struct ev_loop *loop, ev_io *watcher, int events)
{
    (void)loop;
    (void)events;
    struct monitor_client *client = watcher->data;
    char buffer[512];
    ssize_t got = recv(client->fd, buffer, sizeof(buffer), 0);
    if (got < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (got <= 0) {
        drop_client(client);
        return;
    }
    for (ssize_t i = 0; i < got; i++) {
        char c = buffer[i];
        if (c == '\n') {
            if (!client->discarding && !run_line(client))
                return;
            client->discarding = false;
            client->length = 0;
        } else if (c != '\r' && !client->discarding) {
            if (client->length + 1 >= sizeof(client->line))
                client->discarding = true;
            else
                client->line[client->length++] = c;
        }
    }
}

static void accept_ready(struct ev_loop *loop, ev_io *watcher, int events)
{
    (void)events;
    struct monitor *monitor = watcher->data;
    int fd = accept4(monitor->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return; /* EAGAIN, or a client that left at once */
    struct monitor_client *client = calloc(1, sizeof(*client));
    if (!client) {
        close(fd);
        return;
    }
    client->monitor = monitor;
    client->fd = fd;
    client->next = monitor->clients;
    monitor->clients = client;
    ev_io_init(&client->watcher, client_readable, fd, EV_READ);
    client->watcher.data = client;
    ev_io_start(loop, &client->watcher);
    send_text(client, GREETING PROMPT);
}

void monitor_attach(struct monitor *monitor, struct ev_loop *loop)
{
    if (monitor->listen_fd < 0)
        return;
    monitor->loop = loop;
    ev_io_init(&monitor->accept_watcher, accept_ready, monitor->listen_fd, EV_READ);
    monitor->accept_watcher.data = monitor;
    ev_io_start(loop, &monitor->accept_watcher);
}

void monitor_detach(struct monitor *monitor)
{
    if (!monitor->loop)
        return;
    while (monitor->clients)
        drop_client(monitor->clients);
    ev_io_stop(monitor->loop, &monitor->accept_watcher);
    monitor->loop = NULL;
}

void monitor_close(struct monitor *monitor)
{
    if (monitor->listen_fd >= 0) {
        close(monitor->listen_fd);
        unlink(monitor->path);
    }
    free(monitor->path);
    monitor->path = NULL;
    monitor->listen_fd = -1;
}
