#include "server/admin.h"

#include <errno.h>
#include <ev.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/error_message.h"
#include "common/log.h"
#include "server/admin_commands.h"

enum {
    /* A request is a short object; anything longer is not one. */
    MAX_REQUEST_LINE = 64 * 1024,
    /* lunactl opens one connection per command: a few at a time is plenty. */
    MAX_CONNECTIONS = 16,
};

struct admin_connection {
    struct admin_connection *prev, *next;
    struct admin *admin;
    int fd;
    ev_io read_watcher;
    ev_io write_watcher;
    struct admin_command *command; /* the request being answered, if any */
    bool starting;                 /* inside admin_command_start */
    bool input_closed;             /* the peer sent everything it will */
    bool close_after_reply;        /* a request too long to frame: stop after saying so */
    size_t in_length;
    char in[MAX_REQUEST_LINE];
    char *out;                     /* replies not yet written */
    size_t out_length, out_sent;
};

struct admin {
    struct ev_loop *loop;
    int fd;
    char *path;
    ev_io accept_watcher;
    struct admin_commands *commands;
    struct admin_connection *connections;
    unsigned connection_count;
};

static void connection_update(struct admin_connection *connection);

static void connection_close(struct admin_connection *connection)
{
    struct admin *admin = connection->admin;
    ev_io_stop(admin->loop, &connection->read_watcher);
    ev_io_stop(admin->loop, &connection->write_watcher);
    if (connection->command)
        admin_command_cancel(connection->command);
    close(connection->fd);
    if (connection->prev)
        connection->prev->next = connection->next;
    else
        admin->connections = connection->next;
    if (connection->next)
        connection->next->prev = connection->prev;
    admin->connection_count--;
    free(connection->out);
    free(connection);
}

/* Queue a reply line (reply consumed; NULL: out of memory). */
static int queue_reply(struct admin_connection *connection, struct json_object *reply)
{
    const char *text = reply ? json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) : NULL;
    if (!text)
        text = "{\"error\":{\"class\":\"failed\",\"desc\":\"out of memory\"}}";
    size_t length = strlen(text);
    char *grown = realloc(connection->out, connection->out_length + length + 1);
    if (!grown) {
        json_object_put(reply);
        return -ENOMEM;
    }
    memcpy(grown + connection->out_length, text, length);
    grown[connection->out_length + length] = '\n';
    connection->out = grown;
    connection->out_length += length + 1;
    json_object_put(reply);
    return 0;
}

static void queue_error(struct admin_connection *connection, const char *error_class, const char *description)
{
    if (queue_reply(connection, admin_error_reply(error_class, description)) < 0)
        connection->close_after_reply = true;
}

static void command_replied(void *opaque, struct json_object *reply)
{
    struct admin_connection *connection = opaque;
    connection->command = NULL;
    if (queue_reply(connection, reply) < 0)
        connection->close_after_reply = true;
    /* A reply given at once, inside admin_command_start, is flushed by the caller. */
    if (!connection->starting)
        connection_update(connection);
}

/*
 * One request line: parse it and start its command.  Whatever is not a
 * single JSON value gets an error reply, and the next line is read as
 * usual: a typo must not cost the connection.
 */
static void handle_line(struct admin_connection *connection, const char *line, size_t length)
{
    json_tokener *tokener = json_tokener_new();
    if (!tokener) {
        queue_error(connection, "failed", "out of memory");
        return;
    }
    struct json_object *request = json_tokener_parse_ex(tokener, line, (int)length);
    enum json_tokener_error error = json_tokener_get_error(tokener);
    size_t end = json_tokener_get_parse_end(tokener);
    json_tokener_free(tokener);
    while (request && end < length && (line[end] == ' ' || line[end] == '\t' || line[end] == '\r'))
        end++;
    if (!request || error != json_tokener_success || end != length) {
        char description[160];
        snprintf(description, sizeof(description), "malformed JSON request: %s",
                 request ? "text after the JSON value"
                 : error == json_tokener_continue ? "incomplete JSON value"
                                                   : json_tokener_error_desc(error));
        json_object_put(request);
        log_debug("admin: %s", description);
        queue_error(connection, "invalid", description);
        return;
    }
    connection->starting = true;
    connection->command = admin_command_start(connection->admin->commands, request, command_replied, connection);
    connection->starting = false;
    json_object_put(request);
}

/* Take complete lines from the input while no request is being answered. */
static void process_input(struct admin_connection *connection)
{
    while (!connection->command && !connection->close_after_reply) {
        char *newline = memchr(connection->in, '\n', connection->in_length);
        if (!newline) {
            if (connection->in_length == sizeof(connection->in)) {
                queue_error(connection, "invalid", "request line longer than 64 KiB");
                connection->close_after_reply = true;
            } else if (connection->input_closed && connection->in_length > 0) {
                /* A last request without its newline: take it as it is. */
                newline = connection->in + connection->in_length;
            }
            if (!newline)
                return;
        }
        size_t line_length = (size_t)(newline - connection->in);
        size_t consumed = line_length < connection->in_length ? line_length + 1 : line_length;
        size_t blanks = 0;
        while (blanks < line_length && (connection->in[blanks] == ' ' || connection->in[blanks] == '\t' ||
                                        connection->in[blanks] == '\r'))
            blanks++;
        if (blanks < line_length)
            handle_line(connection, connection->in, line_length);
        memmove(connection->in, connection->in + consumed, connection->in_length - consumed);
        connection->in_length -= consumed;
    }
}

static void read_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct admin_connection *connection = watcher->data;
    ssize_t n = read(connection->fd, connection->in + connection->in_length,
                     sizeof(connection->in) - connection->in_length);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        log_debug("admin: read: %s", strerror(errno));
        connection_close(connection);
        return;
    }
    if (n == 0)
        connection->input_closed = true;
    connection->in_length += (size_t)n;
    connection_update(connection);
}

static void write_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
    (void)loop;
    (void)revents;
    connection_update(watcher->data);
}

/* Answer what can be answered, write what is queued, wait for what is missing; close when done. */
static void connection_update(struct admin_connection *connection)
{
    struct admin *admin = connection->admin;
    process_input(connection);
    while (connection->out_sent < connection->out_length) {
        ssize_t n = send(connection->fd, connection->out + connection->out_sent,
                         connection->out_length - connection->out_sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0) {
            log_debug("admin: write: %s", strerror(errno));
            connection_close(connection);
            return;
        }
        connection->out_sent += (size_t)n;
    }
    bool written = connection->out_sent == connection->out_length;
    if (written) {
        connection->out_sent = connection->out_length = 0;
        ev_io_stop(admin->loop, &connection->write_watcher);
    } else {
        ev_io_start(admin->loop, &connection->write_watcher);
    }
    bool idle = !connection->command && written;
    bool more_to_read = !connection->input_closed && !connection->close_after_reply;
    if (idle && !more_to_read && (connection->close_after_reply || connection->in_length == 0)) {
        connection_close(connection);
        return;
    }
    /* Read only while nothing is owed to the peer: a client that does not read its replies stalls itself. */
    if (idle && more_to_read)
        ev_io_start(admin->loop, &connection->read_watcher);
    else
        ev_io_stop(admin->loop, &connection->read_watcher);
}

static void accept_cb(struct ev_loop *loop, ev_io *watcher, int revents)
{
    (void)loop;
    (void)revents;
    struct admin *admin = watcher->data;
    int fd = accept4(admin->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
            log_warn("admin: accept: %s", strerror(errno));
        return;
    }
    struct admin_connection *connection = NULL;
    if (admin->connection_count >= MAX_CONNECTIONS) {
        log_warn("admin: more than %d connections at once; refusing one", MAX_CONNECTIONS);
    } else if (!(connection = calloc(1, sizeof(*connection)))) {
        log_warn("admin: out of memory accepting a connection");
    }
    if (!connection) {
        close(fd);
        return;
    }
    connection->admin = admin;
    connection->fd = fd;
    ev_io_init(&connection->read_watcher, read_cb, fd, EV_READ);
    ev_io_init(&connection->write_watcher, write_cb, fd, EV_WRITE);
    connection->write_watcher.data = connection;
    connection->next = admin->connections;
    if (admin->connections)
        admin->connections->prev = connection;
    admin->connections = connection;
    admin->connection_count++;
    connection->read_watcher.data = connection;
    ev_io_start(admin->loop, &connection->read_watcher);
}

/* Bind path, replacing a stale socket file but never a live server's. */
static int bind_socket(int fd, const char *path, char **error_message)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(address.sun_path))
        return error_message_set(error_message, -ENAMETOOLONG, "admin_socket %s: path too long", path);
    strcpy(address.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool in_use = probe >= 0 && connect(probe, (struct sockaddr *)&address, sizeof(address)) == 0;
        if (probe >= 0)
            close(probe);
        if (in_use)
            return error_message_set(error_message, -EADDRINUSE, "admin_socket %s: another lunad is listening on it",
                                     path);
        unlink(path);
    }
    if (bind(fd, (struct sockaddr *)&address, sizeof(address)) < 0)
        return error_message_set(error_message, -errno, "cannot listen on admin socket %s: %s", path,
                                 strerror(errno));
    /* Before listen: nobody can connect while the mode is still the umask's. */
    if (chmod(path, 0600) < 0 || listen(fd, 16) < 0) {
        int rc = -errno;
        unlink(path);
        return error_message_set(error_message, rc, "cannot listen on admin socket %s: %s", path, strerror(-rc));
    }
    return 0;
}

int admin_open(const char *path, struct ev_loop *loop, struct export_registry *registry,
               const struct lunad_config *config, struct admin **out, char **error_message)
{
    struct admin *admin = calloc(1, sizeof(*admin));
    if (!admin || !(admin->path = strdup(path)) ||
        !(admin->commands = admin_commands_new(loop, registry, config))) {
        if (admin)
            free(admin->path);
        free(admin);
        return error_message_set(error_message, -ENOMEM, "out of memory");
    }
    admin->loop = loop;
    admin->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = admin->fd < 0 ? error_message_set(error_message, -errno, "socket: %s", strerror(errno))
                           : bind_socket(admin->fd, path, error_message);
    if (rc < 0) {
        if (admin->fd >= 0)
            close(admin->fd);
        admin_commands_free(admin->commands);
        free(admin->path);
        free(admin);
        return rc;
    }
    ev_io_init(&admin->accept_watcher, accept_cb, admin->fd, EV_READ);
    admin->accept_watcher.data = admin;
    ev_io_start(loop, &admin->accept_watcher);
    *out = admin;
    return 0;
}

void admin_close(struct admin *admin)
{
    if (!admin)
        return;
    ev_io_stop(admin->loop, &admin->accept_watcher);
    close(admin->fd);
    unlink(admin->path);
    while (admin->connections)
        connection_close(admin->connections);
    admin_commands_free(admin->commands);
    free(admin->path);
    free(admin);
}
