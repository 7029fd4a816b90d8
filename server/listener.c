#include "listener.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "common/error_message.h"
#include "common/log.h"
#include "protocols/iscsi/iscsi_target.h"
#include "protocols/nbd/nbd_session.h"
#include "server/worker.h"

enum { ACCEPTS_PER_EVENT = 64, MAX_LISTENERS = 64 };
#define ACCEPT_PAUSE_SECONDS 0.5

struct listener {
    ev_io watcher;
    int fd;
    bool is_unix;
    char *unix_path;     /* ours to unlink on close; NULL for inherited sockets */
    const struct session_protocol *protocol;
    const void *settings;
    struct listener_set *set;
};

struct listener_set {
    struct ev_loop *loop;
    ev_timer resume_timer; /* accepting paused while out of file descriptors */
    struct worker **workers;
    size_t worker_count;
    struct listener listeners[MAX_LISTENERS];
    size_t count;
    char description[1024];
};

static void describe(struct listener_set *set, const char *what)
{
    size_t len = strlen(set->description);
    snprintf(set->description + len, sizeof(set->description) - len, "%s%s", len ? ", " : "", what);
}

static void format_peer(const struct sockaddr_storage *address, socklen_t length, char *out, size_t size)
{
    if (address->ss_family == AF_UNIX) {
        snprintf(out, size, "unix client");
        return;
    }
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getnameinfo((const struct sockaddr *)address, length, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, size, "unknown peer");
        return;
    }
    if (address->ss_family == AF_INET6)
        snprintf(out, size, "[%s]:%s", host, port);
    else
        snprintf(out, size, "%s:%s", host, port);
}

static struct worker *least_loaded(struct listener_set *set)
{
    struct worker *best = set->workers[0];
    for (size_t i = 1; i < set->worker_count; i++)
        if (worker_connection_count(set->workers[i]) < worker_connection_count(best))
            best = set->workers[i];
    return best;
}

static void set_accepting(struct listener_set *set, bool on)
{
    for (size_t i = 0; i < set->count; i++) {
        if (on)
            ev_io_start(set->loop, &set->listeners[i].watcher);
        else
            ev_io_stop(set->loop, &set->listeners[i].watcher);
    }
}

static void resume_accepting_cb(struct ev_loop *loop, ev_timer *watcher, int revents)
{
    (void)loop;
    (void)revents;
    set_accepting(watcher->data, true);
}

/*
 * Out of file descriptors or memory: the pending connection stays in the
 * backlog and the socket stays readable, so retrying at once would spin.
 * Pause accepting for a moment instead; clients closing frees descriptors.
 */
static void pause_accepting(struct listener_set *set, int error)
{
    log_warn("accept: %s; pausing new connections for %.1f s", strerror(error), ACCEPT_PAUSE_SECONDS);
    set_accepting(set, false);
    ev_timer_set(&set->resume_timer, ACCEPT_PAUSE_SECONDS, 0.);
    ev_timer_start(set->loop, &set->resume_timer);
}

static void accept_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct listener *listener = watcher->data;
    struct listener_set *set = listener->set;
    for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
        struct sockaddr_storage address;
        socklen_t length = sizeof(address);
        int fd = accept4(listener->fd, (struct sockaddr *)&address, &length,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(set, errno);
            else if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warn("accept: %s", strerror(errno));
            return;
        }
        if (!listener->is_unix) {
            int one = 1;
            if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
                log_debug("TCP_NODELAY: %s", strerror(errno));
        }
        struct connection_request request = {.fd = fd, .protocol = listener->protocol,
                                              .settings = listener->settings};
        format_peer(&address, length, request.peer, sizeof(request.peer));
        struct sockaddr_storage local;
        socklen_t local_length = sizeof(local);
        if (!listener->is_unix && getsockname(fd, (struct sockaddr *)&local, &local_length) == 0)
            format_peer(&local, local_length, request.local, sizeof(request.local));
        if (worker_adopt(least_loaded(set), &request) < 0) {
            log_warn("%s: out of memory accepting the connection", request.peer);
            close(fd);
        }
    }
}

static int add_listener(struct listener_set *set, int fd, bool is_unix, char *unix_path,
                        const struct session_protocol *protocol, const void *settings, char **error_message)
{
    if (set->count == MAX_LISTENERS) {
        close(fd);
        free(unix_path);
        return error_message_set(error_message, -E2BIG, "too many listening sockets (at most %d)", MAX_LISTENERS);
    }
    struct listener *listener = &set->listeners[set->count++];
    listener->fd = fd;
    listener->is_unix = is_unix;
    listener->unix_path = unix_path;
    listener->protocol = protocol;
    listener->settings = settings;
    listener->set = set;
    ev_io_init(&listener->watcher, accept_cb, fd, EV_READ);
    listener->watcher.data = listener;
    ev_io_start(set->loop, &listener->watcher);
    return 0;
}

static int open_tcp(struct listener_set *set, const struct listen_address *address,
                    const struct session_protocol *protocol, const void *settings, char **error_message)
{
    const char *key = protocol == &nbd_session_protocol ? "nbd_listen" : "iscsi_listen";
    const char *host = address->host;
    if (host[0] == '\0' || strcmp(host, "*") == 0)
        host = NULL;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE,
    };
    struct addrinfo *results = NULL;
    int gai = getaddrinfo(host, address->port, &hints, &results);
    if (gai != 0)
        return error_message_set(error_message, -EINVAL, "%s %s:%s: %s", key, address->host,
                         address->port, gai_strerror(gai));

    int ret = 0, bound = 0;
    for (struct addrinfo *ai = results; ai && ret == 0; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            if (errno == EAFNOSUPPORT)
                continue;
            ret = error_message_set(error_message, -errno, "socket: %s", strerror(errno));
            break;
        }
        int one = 1;
        char name[NI_MAXHOST + NI_MAXSERV + 4];
        format_peer((struct sockaddr_storage *)ai->ai_addr, ai->ai_addrlen, name, sizeof(name));
        /* V6ONLY lets a wildcard IPv6 socket coexist with the IPv4 one on the same port. */
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            (ai->ai_family == AF_INET6 &&
             setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
            ret = error_message_set(error_message, -errno, "cannot listen on %s: %s", name, strerror(errno));
            close(fd);
            break;
        }
        ret = add_listener(set, fd, false, NULL, protocol, settings, error_message);
        if (ret == 0) {
            char described[sizeof(name) + 16];
            snprintf(described, sizeof(described), "%s (%s)", name, protocol->name);
            describe(set, protocol == &nbd_session_protocol ? name : described);
            bound++;
        }
    }
    freeaddrinfo(results);
    if (ret == 0 && bound == 0)
        ret = error_message_set(error_message, -EADDRNOTAVAIL, "%s %s:%s: no usable address", key,
                        address->host, address->port);
    return ret;
}

static int open_unix(struct listener_set *set, const char *path, char **error_message)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(address.sun_path))
        return error_message_set(error_message, -ENAMETOOLONG, "unix_socket %s: path too long", path);
    strcpy(address.sun_path, path);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return error_message_set(error_message, -errno, "socket: %s", strerror(errno));

    /*
     * A socket file left by a previous run would make bind fail; remove it,
     * but never take the path over from a server still answering on it.
     */
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool in_use = probe >= 0 && connect(probe, (struct sockaddr *)&address, sizeof(address)) == 0;
        if (probe >= 0)
            close(probe);
        if (in_use) {
            close(fd);
            return error_message_set(error_message, -EADDRINUSE,
                             "unix socket %s: another server is listening on it", path);
        }
        unlink(path);
    }
    if (bind(fd, (struct sockaddr *)&address, sizeof(address)) < 0 || listen(fd, SOMAXCONN) < 0) {
        int ret = -errno;
        close(fd);
        return error_message_set(error_message, ret, "cannot listen on unix socket %s: %s", path, strerror(-ret));
    }
    char *owned = strdup(path);
    if (!owned) {
        close(fd);
        unlink(path);
        return error_message_set(error_message, -ENOMEM, "out of memory");
    }
    int ret = add_listener(set, fd, true, owned, &nbd_session_protocol, NULL, error_message);
    if (ret == 0)
        describe(set, path);
    return ret;
}

/* Sockets handed over by systemd (socket activation). */
static int adopt_systemd_sockets(struct listener_set *set, int count, char **error_message)
{
    for (int i = 0; i < count; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
            fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
            return error_message_set(error_message, -errno, "socket activation fd %d: %s", fd, strerror(errno));
        bool is_unix = sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) > 0;
        if (!is_unix && sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0)
            return error_message_set(error_message, -EINVAL,
                             "socket activation fd %d is not a listening stream socket", fd);
        int ret = add_listener(set, fd, is_unix, NULL, &nbd_session_protocol, NULL, error_message);
        if (ret < 0)
            return ret;
        char name[32];
        snprintf(name, sizeof(name), "systemd socket fd %d", fd);
        describe(set, name);
    }
    return 0;
}

int listener_set_open(const struct lunad_config *config, const struct iscsi_settings *iscsi,
                      struct ev_loop *loop, struct worker **workers, size_t worker_count,
                      struct listener_set **out, char **error_message)
{
    struct listener_set *set = calloc(1, sizeof(*set));
    if (!set)
        return error_message_set(error_message, -ENOMEM, "out of memory");
    set->loop = loop;
    ev_timer_init(&set->resume_timer, resume_accepting_cb, ACCEPT_PAUSE_SECONDS, 0.);
    set->resume_timer.data = set;
    set->workers = workers;
    set->worker_count = worker_count;

    int ret = 0;
    /* 0: keep LISTEN_FDS in the environment, so a SIGHUP reload still sees it. */
    int activated = sd_listen_fds(0);
    if (activated > 0) {
        if (config->nbd_listen_count || config->unix_socket_count)
            log_info("socket activation: serving systemd's %d socket(s); nbd_listen and unix_socket "
                     "are ignored", activated);
        ret = adopt_systemd_sockets(set, activated, error_message);
    } else {
        for (size_t i = 0; i < config->nbd_listen_count && ret == 0; i++)
            ret = open_tcp(set, &config->nbd_listen[i], &nbd_session_protocol, NULL, error_message);
        for (size_t i = 0; i < config->unix_socket_count && ret == 0; i++)
            ret = open_unix(set, config->unix_sockets[i], error_message);
    }
    /* systemd passes NBD sockets; iSCSI portals are opened here either way. */
    for (size_t i = 0; i < config->iscsi_listen_count && ret == 0; i++)
        ret = open_tcp(set, &config->iscsi_listen[i], &iscsi_session_protocol, iscsi, error_message);
    if (ret == 0 && set->count == 0)
        ret = error_message_set(error_message, -EINVAL, "nothing to listen on");
    if (ret < 0) {
        listener_set_close(set);
        return ret;
    }
    *out = set;
    return 0;
}

void listener_set_close(struct listener_set *set)
{
    if (!set)
        return;
    ev_timer_stop(set->loop, &set->resume_timer);
    for (size_t i = 0; i < set->count; i++) {
        struct listener *listener = &set->listeners[i];
        ev_io_stop(set->loop, &listener->watcher);
        close(listener->fd);
        if (listener->unix_path) {
            unlink(listener->unix_path);
            free(listener->unix_path);
        }
    }
    free(set);
}

const char *listener_set_describe(const struct listener_set *set) { return set->description; }
