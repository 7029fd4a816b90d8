/*
 * lunactl: administer a running lunad through its admin socket.
 *
 * One command per run: the command line becomes one JSON request line,
 * lunad's one-line reply is printed as a table (or as it is, with
 * --json).  Exit status: 0 done, 1 lunad refused or failed the command,
 * 2 a usage error or no lunad to ask.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/luna/admin.sock"
#define EXIT_REFUSED 1
#define EXIT_USAGE 2

static const char usage_text[] =
    "Usage: lunactl [-s SOCKET] [--json] COMMAND [ARGUMENT]...\n"
    "Administer a running lunad through its admin socket.\n"
    "\n"
    "Commands:\n"
    "  exports                         the exports: name, format, overlay mode, clients, path\n"
    "  overlay list EXPORT             EXPORT's overlays: identity, clients, size on disk, file\n"
    "  overlay reset EXPORT IDENTITY   discard IDENTITY's changes (its overlay starts empty\n"
    "                                  again); refused while a client uses it\n"
    "  overlay commit EXPORT IDENTITY  merge IDENTITY's overlay into EXPORT's image, then\n"
    "                                  empty it; refused while any client uses EXPORT, which\n"
    "                                  new clients cannot use until the commit is done\n"
    "\n"
    "Options:\n"
    "  -s, --socket SOCKET   lunad's admin socket (lunad's admin_socket or\n"
    "                        --admin-socket; default " DEFAULT_SOCKET ")\n"
    "  -j, --json            print lunad's JSON reply as it is\n"
    "  -h, --help            print this help and exit\n"
    "  -V, --version         print the version and exit\n"
    "\n"
    "Exit status: 0 done, 1 lunad refused or failed the command, 2 usage error or\n"
    "lunad unreachable.  See docs/lunad.md, \"Administration\".\n";

static int usage_error(const char *format, const char *argument)
{
    fputs("lunactl: ", stderr);
    fprintf(stderr, format, argument);
    fputs(" (see lunactl --help)\n", stderr);
    return EXIT_USAGE;
}

/* The request for the command line's words, or NULL after reporting a usage error. */
static struct json_object *build_request(int count, char **words)
{
    const char *command = NULL;
    int arguments = 0;
    if (count >= 1 && strcmp(words[0], "exports") == 0) {
        command = "exports";
    } else if (count >= 2 && strcmp(words[0], "overlay") == 0) {
        if (strcmp(words[1], "list") == 0) {
            command = "overlay-list";
            arguments = 1;
        } else if (strcmp(words[1], "reset") == 0) {
            command = "overlay-reset";
            arguments = 2;
        } else if (strcmp(words[1], "commit") == 0) {
            command = "overlay-commit";
            arguments = 2;
        }
    }
    if (!command) {
        if (count == 0)
            usage_error("a command is needed%s", "");
        else if (strcmp(words[0], "overlay") == 0)
            usage_error("overlay: expected list, reset or commit%s", "");
        else
            usage_error("unknown command '%s'", words[0]);
        return NULL;
    }
    int first = strcmp(command, "exports") == 0 ? 1 : 2;
    if (count - first != arguments) {
        usage_error(arguments == 0   ? "%s takes no arguments"
                    : arguments == 1 ? "%s: expected EXPORT"
                                     : "%s: expected EXPORT IDENTITY",
                    first == 1 ? words[0] : words[1]);
        return NULL;
    }
    struct json_object *request = json_object_new_object();
    if (!request)
        return NULL;
    json_object_object_add(request, "command", json_object_new_string(command));
    if (arguments >= 1)
        json_object_object_add(request, "export", json_object_new_string(words[first]));
    if (arguments >= 2)
        json_object_object_add(request, "identity", json_object_new_string(words[first + 1]));
    return request;
}

static int connect_socket(const char *path)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(address.sun_path)) {
        fprintf(stderr, "lunactl: %s: path too long for a Unix socket\n", path);
        return -1;
    }
    strcpy(address.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "lunactl: socket: %s\n", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0) {
        int error = errno;
        fprintf(stderr, "lunactl: cannot connect to lunad's admin socket %s: %s\n", path, strerror(error));
        if (error == ENOENT || error == ECONNREFUSED)
            fprintf(stderr, "lunactl: is lunad running with admin_socket = %s (or --admin-socket)?\n", path);
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *data, size_t length)
{
    while (length > 0) {
        ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        data += n;
        length -= (size_t)n;
    }
    return 0;
}

/* lunad's reply line (malloc'd, without its newline), or NULL after reporting why. */
static char *receive_line(int fd)
{
    size_t length = 0, capacity = 4096;
    char *line = malloc(capacity);
    while (line) {
        if (length == capacity) {
            char *grown = realloc(line, capacity *= 2);
            if (!grown)
                break;
            line = grown;
        }
        ssize_t n = read(fd, line + length, capacity - length);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "lunactl: lunad closed the connection without a reply%s%s\n", n < 0 ? ": " : "",
                    n < 0 ? strerror(errno) : "");
            free(line);
            return NULL;
        }
        char *newline = memchr(line + length, '\n', (size_t)n);
        length += (size_t)n;
        if (newline) {
            *newline = '\0';
            return line;
        }
    }
    free(line);
    fputs("lunactl: out of memory\n", stderr);
    return NULL;
}

static const char *string_member(struct json_object *object, const char *key)
{
    struct json_object *value;
    if (!json_object_object_get_ex(object, key, &value) || !json_object_is_type(value, json_type_string))
        return NULL;
    return json_object_get_string(value);
}

static uint64_t number_member(struct json_object *object, const char *key)
{
    struct json_object *value;
    if (!json_object_object_get_ex(object, key, &value))
        return 0;
    return json_object_get_uint64(value);
}

/* Bytes as qemu-img prints sizes: "0 B", "196 KiB", "1.5 GiB". */
static void format_size(uint64_t bytes, char *out, size_t size)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double value = (double)bytes;
    unsigned unit = 0;
    while (value >= 1024 && unit + 1 < sizeof(units) / sizeof(units[0])) {
        value /= 1024;
        unit++;
    }
    if (unit == 0 || value >= 100 || value == (double)(uint64_t)value)
        snprintf(out, size, "%.0f %s", value, units[unit]);
    else
        snprintf(out, size, "%.3g %s", value, units[unit]);
}

static int column_width(struct json_object *list, const char *key, const char *heading)
{
    size_t width = strlen(heading);
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        const char *text = string_member(json_object_array_get_idx(list, i), key);
        if (text && strlen(text) > width)
            width = strlen(text);
    }
    return (int)width;
}

static void print_exports(struct json_object *value)
{
    struct json_object *list;
    if (!json_object_object_get_ex(value, "exports", &list) || !json_object_is_type(list, json_type_array))
        return;
    int name = column_width(list, "name", "NAME"), format = column_width(list, "format", "FORMAT");
    printf("%-*s  %-*s  %-10s  %7s  %s\n", name, "NAME", format, "FORMAT", "OVERLAY", "CLIENTS", "PATH");
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        struct json_object *export = json_object_array_get_idx(list, i);
        const char *path = string_member(export, "path");
        printf("%-*s  %-*s  %-10s  %7" PRIu64 "  %s\n", name, string_member(export, "name"), format,
               string_member(export, "format"), string_member(export, "overlay"),
               number_member(export, "clients"), path ? path : "");
    }
}

static void print_overlays(struct json_object *value)
{
    struct json_object *list;
    if (!json_object_object_get_ex(value, "overlays", &list) || !json_object_is_type(list, json_type_array))
        return;
    const char *mode = string_member(value, "overlay");
    if (json_object_array_length(list) == 0) {
        printf("export '%s': no %s overlays\n", string_member(value, "export"),
               mode && strcmp(mode, "ephemeral") == 0 ? "live ephemeral" : "persistent");
        return;
    }
    int identity = column_width(list, "identity", "IDENTITY");
    if (identity < (int)strlen("(ephemeral)"))
        identity = (int)strlen("(ephemeral)");
    printf("%-*s  %7s  %10s  %s\n", identity, "IDENTITY", "CLIENTS", "DISK", "FILE");
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        struct json_object *overlay = json_object_array_get_idx(list, i);
        const char *name = string_member(overlay, "identity");
        const char *file = string_member(overlay, "file");
        char disk[32] = "-";
        if (file)
            format_size(number_member(overlay, "disk_bytes"), disk, sizeof(disk));
        printf("%-*s  %7" PRIu64 "  %10s  %s\n", identity, name ? name : "(ephemeral)",
               number_member(overlay, "clients"), disk, file ? file : "(unlinked)");
    }
}

/* Print a successful reply for the command it answers. */
static void print_result(const char *command, struct json_object *value)
{
    if (strcmp(command, "exports") == 0) {
        print_exports(value);
    } else if (strcmp(command, "overlay-list") == 0) {
        print_overlays(value);
    } else if (strcmp(command, "overlay-reset") == 0) {
        printf("export '%s': overlay '%s' reset\n", string_member(value, "export"),
               string_member(value, "identity"));
    } else {
        char size[32];
        format_size(number_member(value, "bytes"), size, sizeof(size));
        printf("export '%s': overlay '%s' committed into the image (%s) and emptied\n",
               string_member(value, "export"), string_member(value, "identity"), size);
    }
}

/* Ask lunad; the exit status. */
static int run(const char *socket_path, bool json, struct json_object *request)
{
    const char *text = json_object_to_json_string_ext(request, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    char *line = NULL;
    if (!text || asprintf(&line, "%s\n", text) < 0) {
        fputs("lunactl: out of memory\n", stderr);
        return EXIT_USAGE;
    }
    int fd = connect_socket(socket_path);
    if (fd < 0) {
        free(line);
        return EXIT_USAGE;
    }
    int rc = send_all(fd, line, strlen(line));
    free(line);
    if (rc < 0) {
        fprintf(stderr, "lunactl: %s: %s\n", socket_path, strerror(-rc));
        close(fd);
        return EXIT_USAGE;
    }
    char *reply_text = receive_line(fd);
    close(fd);
    if (!reply_text)
        return EXIT_USAGE;
    struct json_object *reply = json_tokener_parse(reply_text);
    struct json_object *error = NULL, *value = NULL;
    int status = EXIT_SUCCESS;
    if (!reply || !json_object_is_type(reply, json_type_object)) {
        fprintf(stderr, "lunactl: lunad's reply is not a JSON object: %s\n", reply_text);
        status = EXIT_USAGE;
    } else if (json_object_object_get_ex(reply, "error", &error)) {
        const char *description = string_member(error, "desc");
        if (json)
            puts(reply_text);
        else
            fprintf(stderr, "lunactl: %s\n", description ? description : reply_text);
        status = EXIT_REFUSED;
    } else if (json) {
        puts(reply_text);
    } else if (json_object_object_get_ex(reply, "return", &value)) {
        print_result(string_member(request, "command"), value);
    }
    json_object_put(reply);
    free(reply_text);
    return status;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"socket", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *socket_path = DEFAULT_SOCKET;
    bool json = false;
    opterr = 0;
    for (;;) {
        int option = getopt_long(argc, argv, "+:s:jhV", options, NULL);
        if (option == -1)
            break;
        switch (option) {
        case 's':
            socket_path = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return EXIT_SUCCESS;
        case 'V':
            printf("lunactl %s\n", LUNA_VERSION);
            return EXIT_SUCCESS;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    struct json_object *request = build_request(argc - optind, argv + optind);
    if (!request)
        return EXIT_USAGE;
    int status = run(socket_path, json, request);
    json_object_put(request);
    return status;
}
