/*
 * INI files -> struct lunad_config, with libinih.
 *
 * Debian 12's inih (r55) is built without INI_HANDLER_LINENO and only calls
 * the handler for key lines, so lunad feeds it through its own reader
 * (ini_parse_stream): the reader counts lines, so every message can name
 * one, and it sees section headers itself, so an empty or misspelt section
 * is reported even when it holds no key.  The reader also strips leading
 * blanks, because inih would otherwise take an indented key for the
 * continuation of the previous value.  The first error stops the parse.
 */
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

/* Configuration files are small; anything larger is a mistake (a disk image?). */
#define CONFIG_FILE_MAX (1 << 20)

enum section_kind {
    SECTION_NONE,
    SECTION_SERVER,
    SECTION_EXPORT,
    SECTION_TARGET,
    SECTION_DISCOVERY,
};

enum server_key {
    SERVER_NBD_LISTEN,
    SERVER_ISCSI_LISTEN,
    SERVER_ISCSI_PING_INTERVAL,
    SERVER_UNIX_SOCKET,
    SERVER_WORKERS,
    SERVER_LOG_LEVEL,
    SERVER_PIDFILE,
    SERVER_ADMIN_SOCKET,
    SERVER_STATE_DIR,
    SERVER_KEY_COUNT,
};

static const struct {
    const char *name;
    bool repeatable;
} server_keys[SERVER_KEY_COUNT] = {
    [SERVER_NBD_LISTEN] = {"nbd_listen", true},
    [SERVER_ISCSI_LISTEN] = {"iscsi_listen", true},
    [SERVER_ISCSI_PING_INTERVAL] = {"iscsi_ping_interval", false},
    [SERVER_UNIX_SOCKET] = {"unix_socket", true},
    [SERVER_WORKERS] = {"workers", false},
    [SERVER_LOG_LEVEL] = {"log_level", false},
    [SERVER_PIDFILE] = {"pidfile", false},
    [SERVER_ADMIN_SOCKET] = {"admin_socket", false},
    [SERVER_STATE_DIR] = {"state_dir", false},
};

struct ini_parser {
    const char *origin; /* for messages: the file name as given */
    struct lunad_config *config;

    const char *text;
    size_t length;
    size_t position;
    unsigned line;

    enum section_kind section;
    struct iscsi_target_config *target; /* the [target IQN] being read */
    char *section_title;  /* "server", "export demo": as in messages */
    unsigned section_line;
    unsigned server_key_lines[SERVER_KEY_COUNT];
    unsigned export_key_lines[EXPORT_OPTION_COUNT];
    unsigned *export_lines; /* section line of each export, parallel to config->exports */

    char *error; /* first error; stops the parse */
    int error_code;
    unsigned error_line;
};

__attribute__((format(printf, 3, 4))) static void parser_fail(struct ini_parser *parser, int code,
                                                              const char *format, ...)
{
    if (parser->error_code)
        return;
    va_list args;
    va_start(args, format);
    char *detail = NULL;
    if (vasprintf(&detail, format, args) < 0)
        detail = NULL;
    va_end(args);
    parser->error = config_printf("%s:%u: %s", parser->origin, parser->line,
                                  detail ? detail : "out of memory");
    free(detail);
    parser->error_code = code;
    parser->error_line = parser->line;
}

/* Error about a key: "file:12: [export demo] cache: unknown value ...". */
static void key_fail(struct ini_parser *parser, int code, const char *key, const char *reason)
{
    if (parser->section == SECTION_NONE)
        parser_fail(parser, code, "%s: %s", key, config_reason_text(reason));
    else
        parser_fail(parser, code, "[%s] %s: %s", parser->section_title, key,
                    config_reason_text(reason));
}

static struct export_config *current_export(struct ini_parser *parser)
{
    return &parser->config->exports[parser->config->export_count - 1];
}

/* Checks that need the whole section: run when the next one opens or the file ends. */
static void section_close(struct ini_parser *parser)
{
    if (parser->section != SECTION_EXPORT || parser->error_code)
        return;
    enum export_option culprit;
    char *reason = NULL;
    if (export_config_check(current_export(parser), &culprit, &reason) < 0) {
        /* Blame the key's own line; for a missing key, the section header. */
        unsigned line = parser->export_key_lines[culprit];
        unsigned saved = parser->line;
        parser->line = line ? line : parser->section_line;
        key_fail(parser, -EINVAL, export_option_name(culprit), reason);
        parser->line = saved;
    }
    free(reason);
}

static void open_export(struct ini_parser *parser, const char *name)
{
    char *reason = NULL;
    if (export_name_check(name, &reason) < 0) {
        parser_fail(parser, -EINVAL, "[%s]: %s (expected [export NAME])", parser->section_title,
                    config_reason_text(reason));
        free(reason);
        return;
    }
    long previous = lunad_config_find_export(parser->config, name);
    if (previous >= 0) {
        parser_fail(parser, -EINVAL, "[%s]: duplicate export name (first defined on line %u)",
                    parser->section_title, parser->export_lines[previous]);
        return;
    }
    struct lunad_config *config = parser->config;
    unsigned *lines = realloc(parser->export_lines, (config->export_count + 1) * sizeof(*lines));
    if (!lines) {
        parser_fail(parser, -ENOMEM, "out of memory");
        return;
    }
    parser->export_lines = lines;
    struct export_config export;
    if (export_config_start(&export, name) < 0 || lunad_config_add_export(config, &export) < 0) {
        export_config_clear(&export);
        parser_fail(parser, -ENOMEM, "out of memory");
        return;
    }
    lines[config->export_count - 1] = parser->line;
    memset(parser->export_key_lines, 0, sizeof(parser->export_key_lines));
}

static void section_open(struct ini_parser *parser, const char *title)
{
    section_close(parser);
    if (parser->error_code)
        return;
    free(parser->section_title);
    parser->section_title = strdup(title);
    parser->section = SECTION_NONE;
    if (!parser->section_title) {
        parser_fail(parser, -ENOMEM, "out of memory");
        return;
    }
    parser->section_line = parser->line;
    if (strcmp(title, "server") == 0) {
        parser->section = SECTION_SERVER;
        return;
    }
    size_t keyword = strlen("export");
    if (strncmp(title, "export", keyword) == 0 &&
        (title[keyword] == '\0' || title[keyword] == ' ' || title[keyword] == '\t')) {
        parser->section = SECTION_EXPORT;
        open_export(parser, title + keyword + strspn(title + keyword, " \t"));
        return;
    }
    if (strcmp(title, "discovery") == 0) {
        parser->section = SECTION_DISCOVERY;
        return;
    }
    keyword = strlen("target");
    if (strncmp(title, "target", keyword) == 0 && (title[keyword] == ' ' || title[keyword] == '\t')) {
        parser->section = SECTION_TARGET;
        char *reason = NULL;
        int ret = lunad_config_add_target(parser->config, title + keyword + strspn(title + keyword, " \t"),
                                          &parser->target, &reason);
        if (ret < 0)
            parser_fail(parser, ret, "[%s]: %s", title, ret == -ENOMEM && !reason ? "out of memory" : reason);
        free(reason);
        return;
    }
    parser_fail(parser, -EINVAL, "[%s]: unknown section (expected [server], [export NAME], [target IQN] or "
                "[discovery])",
                title);
}

/* A "[...]" line, as inih reads it: the title ends at ']', a comment may follow. */
static void section_header(struct ini_parser *parser, const char *line, size_t length)
{
    const char *close = memchr(line, ']', length);
    if (!close) {
        parser_fail(parser, -EINVAL, "syntax error: section header without ']'");
        return;
    }
    const char *rest = close + 1;
    size_t rest_length = length - (size_t)(rest - line);
    size_t blanks = strspn(rest, " \t\r");
    if (blanks < rest_length && rest[blanks] != ';' && rest[blanks] != '#') {
        parser_fail(parser, -EINVAL, "syntax error: text after the section header");
        return;
    }
    char title[INI_MAX_LINE];
    const char *start = line + 1;
    const char *end = close;
    while (start < end && (*start == ' ' || *start == '\t'))
        start++;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    /* The title sits inside a line that fitted INI_MAX_LINE, so it fits too. */
    memcpy(title, start, (size_t)(end - start));
    title[end - start] = '\0';
    section_open(parser, title);
}

/* ini_reader: one line per call, counted; NULL at the end or after an error. */
static char *read_line(char *buffer, int size, void *stream)
{
    struct ini_parser *parser = stream;
    if (parser->error_code || parser->position >= parser->length)
        return NULL;
    const char *start = parser->text + parser->position;
    const char *newline = memchr(start, '\n', parser->length - parser->position);
    size_t length = newline ? (size_t)(newline - start) : parser->length - parser->position;
    parser->position += length + (newline ? 1 : 0);
    parser->line++;

    /* Leading blanks (and a UTF-8 byte order mark on line 1) carry no meaning. */
    if (parser->line == 1 && length >= 3 && memcmp(start, "\xEF\xBB\xBF", 3) == 0) {
        start += 3;
        length -= 3;
    }
    size_t blanks = 0;
    while (blanks < length && (start[blanks] == ' ' || start[blanks] == '\t'))
        blanks++;
    start += blanks;
    length -= blanks;
    if (memchr(start, '\0', length)) {
        parser_fail(parser, -EINVAL, "binary data (a NUL byte) in the configuration");
        return NULL;
    }
    /* fgets semantics: room for the line, its newline and the terminator. */
    if (length + 2 > (size_t)size) {
        parser_fail(parser, -EINVAL, "line too long (at most %d characters)", size - 2);
        return NULL;
    }
    if (length > 0 && start[0] == '[') {
        section_header(parser, start, length);
        if (parser->error_code)
            return NULL;
        /* inih need not track sections: the parser already does. */
        length = 0;
    }
    memcpy(buffer, start, length);
    buffer[length] = '\n';
    buffer[length + 1] = '\0';
    return buffer;
}

/* Surrounding double quotes are not part of a value: description = "a b". */
static const char *unquote(const char *value, char *buffer, size_t size)
{
    size_t length = strlen(value);
    if (length < 2 || value[0] != '"' || value[length - 1] != '"' || length - 2 >= size)
        return value;
    memcpy(buffer, value + 1, length - 2);
    buffer[length - 2] = '\0';
    return buffer;
}

static bool key_seen_before(struct ini_parser *parser, unsigned *line_slot, const char *key)
{
    if (*line_slot) {
        char reason[64];
        snprintf(reason, sizeof(reason), "given twice (first on line %u)", *line_slot);
        key_fail(parser, -EINVAL, key, reason);
        return true;
    }
    *line_slot = parser->line;
    return false;
}

static void server_key(struct ini_parser *parser, const char *key, const char *value)
{
    int index = -1;
    for (int i = 0; i < SERVER_KEY_COUNT; i++)
        if (strcmp(key, server_keys[i].name) == 0)
            index = i;
    if (index < 0) {
        key_fail(parser, -EINVAL, key,
                 "unknown key (expected nbd_listen, iscsi_listen, iscsi_ping_interval, unix_socket, workers, "
                 "log_level, pidfile, admin_socket, state_dir)");
        return;
    }
    if (!server_keys[index].repeatable &&
        key_seen_before(parser, &parser->server_key_lines[index], key))
        return;

    struct lunad_config *config = parser->config;
    char *reason = NULL;
    int ret = 0;
    switch ((enum server_key)index) {
    case SERVER_NBD_LISTEN: {
        struct listen_address address;
        ret = listen_address_parse_reason(value, NULL, &address, &reason);
        if (ret == 0 && (ret = lunad_config_add_nbd_listen(config, &address)) < 0)
            listen_address_clear(&address);
        break;
    }
    case SERVER_ISCSI_LISTEN: {
        struct listen_address address;
        ret = listen_address_parse_reason(value, "3260", &address, &reason);
        if (ret == 0 && (ret = lunad_config_add_iscsi_listen(config, &address)) < 0)
            listen_address_clear(&address);
        break;
    }
    case SERVER_ISCSI_PING_INTERVAL:
        ret = config_parse_seconds(value, 0, 3600, &config->iscsi_ping_interval, &reason);
        break;
    case SERVER_UNIX_SOCKET:
        ret = config_check_unix_socket(value, &reason);
        if (ret == 0)
            ret = lunad_config_add_unix_socket(config, value);
        break;
    case SERVER_WORKERS:
        ret = config_parse_workers(value, &config->workers, &reason);
        break;
    case SERVER_LOG_LEVEL:
        ret = config_parse_log_level(value, &config->log_level, &reason);
        break;
    case SERVER_PIDFILE:
        ret = config_replace_string(&config->pidfile, value);
        break;
    case SERVER_STATE_DIR:
        ret = config_replace_string(&config->state_dir, value);
        break;
    case SERVER_ADMIN_SOCKET: {
        ret = config_check_unix_socket(value, &reason);
        char *copy = ret == 0 ? strdup(value) : NULL;
        if (ret == 0 && !copy)
            ret = -ENOMEM;
        if (ret < 0)
            break;
        free(config->admin_socket);
        config->admin_socket = copy;
        break;
    }
    case SERVER_KEY_COUNT:
        break;
    }
    if (ret < 0)
        key_fail(parser, ret, key, ret == -ENOMEM && !reason ? "out of memory" : reason);
    free(reason);
}

static void export_key(struct ini_parser *parser, const char *key, const char *value)
{
    int option = export_option_lookup(key);
    /* Dashes are for flags; the file spells keys with underscores only. */
    if (option < 0 || strchr(key, '-')) {
        key_fail(parser, -EINVAL, key, "unknown key (expected " EXPORT_OPTION_LIST ")");
        return;
    }
    if (key_seen_before(parser, &parser->export_key_lines[option], key))
        return;
    char *reason = NULL;
    int ret = export_option_set(current_export(parser), (enum export_option)option, value, &reason);
    if (ret < 0)
        key_fail(parser, ret, key, ret == -ENOMEM && !reason ? "out of memory" : reason);
    free(reason);
}

static int handle_key(void *user, const char *section, const char *key, const char *raw_value)
{
    (void)section; /* the reader tracks sections (inih truncates long titles) */
    struct ini_parser *parser = user;
    if (parser->error_code)
        return 0;
    char buffer[INI_MAX_LINE];
    const char *value = unquote(raw_value, buffer, sizeof(buffer));
    if (parser->section == SECTION_NONE) {
        parser_fail(parser, -EINVAL, "%s: key outside a section (put it under [server], "
                    "[export NAME] or [target IQN])", key);
        return 0;
    }
    if (value[0] == '\0') {
        key_fail(parser, -EINVAL, key, "empty value");
        return 0;
    }
    if (parser->section == SECTION_SERVER) {
        server_key(parser, key, value);
    } else if (parser->section == SECTION_DISCOVERY) {
        bool known;
        int ret = iscsi_chap_key_set(&parser->config->discovery_chap, key, value, &known);
        if (!known)
            key_fail(parser, -EINVAL, key,
                     "unknown key (expected chap_user, chap_secret, mutual_chap_user or mutual_chap_secret)");
        else if (ret < 0)
            key_fail(parser, ret, key, "out of memory");
    } else if (parser->section == SECTION_TARGET) {
        char *reason = NULL;
        int ret = iscsi_target_key_set(parser->target, key, value, &reason);
        if (ret < 0)
            key_fail(parser, ret, key, ret == -ENOMEM && !reason ? "out of memory" : reason);
        free(reason);
    } else {
        export_key(parser, key, value);
    }
    return parser->error_code ? 0 : 1;
}

static int parse_text(const char *text, size_t length, const char *origin,
                      struct lunad_config *config, char **error_message)
{
    struct lunad_config fresh;
    lunad_config_init(&fresh);
    struct ini_parser parser = {
        .origin = origin,
        .config = &fresh,
        .text = text,
        .length = length,
    };
    int ret = ini_parse_stream(read_line, &parser, handle_key, &parser);
    section_close(&parser);
    /* inih reports only syntax errors, by line: whichever error comes first wins. */
    if (ret > 0 && (!parser.error_code || (unsigned)ret < parser.error_line)) {
        free(parser.error);
        parser.error = config_printf("%s:%d: syntax error (expected [section], key = value or a "
                                     "comment)",
                                     origin, ret);
        parser.error_code = -EINVAL;
    } else if (ret < 0 && !parser.error_code) {
        parser.error = config_printf("%s: out of memory", origin);
        parser.error_code = -ENOMEM;
    }
    if (!parser.error_code) {
        fresh.source = strdup(origin);
        if (!fresh.source) {
            parser.error = config_printf("%s: out of memory", origin);
            parser.error_code = -ENOMEM;
        }
    }
    free(parser.section_title);
    free(parser.export_lines);
    if (parser.error_code) {
        lunad_config_clear(&fresh);
        if (error_message)
            *error_message = parser.error;
        else
            free(parser.error);
        return parser.error_code;
    }
    lunad_config_clear(config);
    *config = fresh;
    return 0;
}

int lunad_config_load_string(const char *text, const char *origin, struct lunad_config *config,
                             char **error_message)
{
    if (error_message)
        *error_message = NULL;
    return parse_text(text, strlen(text), origin ? origin : "configuration", config, error_message);
}

/* Whole file into memory: small, and one read keeps line counting simple. */
static int read_file(const char *path, char **text, size_t *length, char **error_message)
{
    FILE *file = fopen(path, "re");
    if (!file) {
        int ret = -errno;
        return error_message_set(error_message, ret, "%s: cannot open: %s", path, strerror(-ret));
    }
    char *buffer = malloc(CONFIG_FILE_MAX + 1);
    if (!buffer) {
        fclose(file);
        return error_message_set(error_message, -ENOMEM, "%s: out of memory", path);
    }
    size_t used = fread(buffer, 1, CONFIG_FILE_MAX + 1, file);
    int ret = 0;
    if (ferror(file))
        ret = error_message_set(error_message, -EIO, "%s: read error", path);
    else if (used > CONFIG_FILE_MAX)
        ret = error_message_set(error_message, -EFBIG, "%s: larger than %d bytes: not a configuration file",
                          path, CONFIG_FILE_MAX);
    fclose(file);
    if (ret < 0) {
        free(buffer);
        return ret;
    }
    buffer[used] = '\0';
    *text = buffer;
    *length = used;
    return 0;
}

int lunad_config_load_file(const char *path, struct lunad_config *config, char **error_message)
{
    if (error_message)
        *error_message = NULL;
    char *text = NULL;
    size_t length = 0;
    int ret = read_file(path, &text, &length, error_message);
    if (ret < 0)
        return ret;
    ret = parse_text(text, length, path, config, error_message);
    free(text);
    return ret;
}
