/*
 * The command line -> struct lunad_config.
 *
 * Flags are collected first and applied after the file is loaded, so their
 * order on the command line does not matter: a flag replaces the same
 * [server] key of the file (--nbd replaces every nbd_listen, --iscsi every
 * iscsi_listen, --unix every unix_socket), and --export adds an export,
 * --target an iSCSI target.  Without --config, --export starts from an
 * empty configuration and listens on 127.0.0.1:10809 unless --nbd, --unix,
 * --iscsi or --target says otherwise, and --target alone listens for iSCSI
 * on 127.0.0.1:3260 (loopback, not 0.0.0.0, so a quick test never exposes
 * a disk to the network); with neither --config nor --export, the embedded
 * default is the base.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

enum {
    OPTION_CONFIG = 256,
    OPTION_CHECK_CONFIG,
    OPTION_NBD,
    OPTION_ISCSI,
    OPTION_TARGET,
    OPTION_UNIX,
    OPTION_EXPORT,
    OPTION_WORKERS,
    OPTION_LOG_LEVEL,
    OPTION_PIDFILE,
    OPTION_ADMIN_SOCKET,
    OPTION_STATE_DIR,
};

static const struct option long_options[] = {
    {"config", required_argument, NULL, OPTION_CONFIG},
    {"check-config", required_argument, NULL, OPTION_CHECK_CONFIG},
    {"nbd", required_argument, NULL, OPTION_NBD},
    {"iscsi", required_argument, NULL, OPTION_ISCSI},
    {"target", required_argument, NULL, OPTION_TARGET},
    {"unix", required_argument, NULL, OPTION_UNIX},
    {"export", required_argument, NULL, OPTION_EXPORT},
    {"workers", required_argument, NULL, OPTION_WORKERS},
    {"log-level", required_argument, NULL, OPTION_LOG_LEVEL},
    {"pidfile", required_argument, NULL, OPTION_PIDFILE},
    {"admin-socket", required_argument, NULL, OPTION_ADMIN_SOCKET},
    {"state-dir", required_argument, NULL, OPTION_STATE_DIR},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static const char usage_text[] =
    "Usage: lunad [OPTION]...\n"
    "Serve disk images over NBD and iSCSI.\n"
    "\n"
    "Without options, serve the embedded default: export 'demo' (var/demo.img, a 1 GiB\n"
    "sparse file created on first start) on 127.0.0.1:10809.\n"
    "\n"
    "  --config FILE            read the configuration from FILE (INI)\n"
    "  --check-config FILE      load and validate FILE (and the other flags), then exit\n"
    "  --nbd ADDR:PORT          listen for NBD on ADDR:PORT (repeatable; [::1]:10809,\n"
    "                           :10809 for every address); replaces the file's nbd_listen\n"
    "  --iscsi ADDR[:PORT]      listen for iSCSI on ADDR:PORT (repeatable; port 3260 by\n"
    "                           default); replaces the file's iscsi_listen\n"
    "  --target IQN=EXPORT[,EXPORT]...\n"
    "                           an iSCSI target whose LUNs 0, 1, ... are these exports\n"
    "                           (repeatable); without --iscsi, listens on 127.0.0.1:3260\n"
    "  --unix PATH              listen for NBD on a Unix socket (repeatable); replaces\n"
    "                           the file's unix_socket\n"
    "  --export NAME=PATH[,format=raw|host_device|qcow2|vmdk|vdi|vpc|lvm|nbd|iscsi|auto]\n"
    "           [,readonly=on|off]\n"
    "           [,cache=writeback|writethrough|none|directsync|unsafe]\n"
    "           [,aio=io_uring|threads|default][,discard=unmap|ignore]\n"
    "           [,description=TEXT][,create-size=SIZE][,l2-cache-size=SIZE]\n"
    "           [,overlay=none|ephemeral[:DIR]|persistent:DIR][,lvm-devices=PV[:PV]...]\n"
    "           [,reconnect-timeout=SECONDS]\n"
    "                           add an export (repeatable); ',,' is a literal comma.\n"
    "                           Without --nbd/--unix/--iscsi, listens on 127.0.0.1:10809\n"
    "  --workers N              worker threads (0: one per CPU; at most 256)\n"
    "  --log-level LEVEL        error, warn, info (default) or debug\n"
    "  --pidfile PATH           write the process id to PATH\n"
    "  --admin-socket PATH      accept lunactl commands on this Unix socket (none by\n"
    "                           default; /run/luna/admin.sock is lunactl's default)\n"
    "  --state-dir DIR          keep state across restarts here: iSCSI persistent\n"
    "                           reservations with APTPL (default: $STATE_DIRECTORY\n"
    "                           under systemd, else none)\n"
    "  -h, --help               print this help and exit\n"
    "  -V, --version            print the version and exit\n"
    "\n"
    "Relative paths are relative to the directory lunad was started in.\n"
    "Signals: SIGTERM stops gracefully, SIGHUP reloads the configuration.\n"
    "See docs/lunad.md for every option and configuration key.\n";

struct cli_request {
    const char *config_path;
    const char *config_flag; /* "--config" or "--check-config", for messages */
    bool check;
    struct lunad_config flags; /* listeners, exports and server keys given as flags */
    bool workers_given;
    bool log_level_given;
};

static int flag_fail(char **message, const char *flag, char *reason, int code)
{
    error_message_set(message, code, "%s: %s", flag, config_reason_text(reason));
    free(reason);
    return code;
}

/*
 * Split "a,b,,c" on single commas into fields ("a", "b,c"): ",," is an
 * escaped comma, as in qemu's option syntax.  fields are pointers into
 * buffer, which the caller frees.
 */
static int split_fields(const char *text, char **buffer, char ***fields, size_t *count)
{
    size_t length = strlen(text);
    char *copy = malloc(length + 1);
    char **list = calloc(length + 2, sizeof(*list));
    if (!copy || !list) {
        free(copy);
        free(list);
        return -ENOMEM;
    }
    size_t n = 0;
    char *out = copy;
    list[n++] = out;
    for (const char *in = text; *in; in++) {
        if (*in == ',' && in[1] == ',') {
            *out++ = ',';
            in++;
        } else if (*in == ',') {
            *out++ = '\0';
            list[n++] = out;
        } else {
            *out++ = *in;
        }
    }
    *out = '\0';
    *buffer = copy;
    *fields = list;
    *count = n;
    return 0;
}

static int parse_export_fields(struct export_config *export, char **fields, size_t count,
                               char **message)
{
    unsigned given[EXPORT_OPTION_COUNT] = {0};
    char *reason = NULL;
    int ret = export_option_set(export, EXPORT_OPTION_PATH, fields[0], &reason);
    if (ret < 0)
        goto fail_key_path;
    given[EXPORT_OPTION_PATH] = 1;
    for (size_t i = 1; i < count; i++) {
        char *equals = strchr(fields[i], '=');
        if (!equals)
            return error_message_set(message, -EINVAL, "--export %s: '%s': expected key=value",
                               export->name, fields[i]);
        *equals = '\0';
        const char *key = fields[i];
        int option = export_option_lookup(key);
        if (option < 0)
            return error_message_set(message, -EINVAL,
                               "--export %s: %s: unknown key (expected format, readonly, cache, "
                               "aio, discard, description, create-size)",
                               export->name, key);
        if (given[option]++)
            return error_message_set(message, -EINVAL, "--export %s: %s: given twice", export->name, key);
        ret = export_option_set(export, (enum export_option)option, equals + 1, &reason);
        if (ret < 0) {
            error_message_set(message, ret, "--export %s: %s: %s", export->name, key,
                        config_reason_text(reason));
            free(reason);
            return ret;
        }
    }
    enum export_option culprit;
    ret = export_config_check(export, &culprit, &reason);
    if (ret < 0) {
        error_message_set(message, ret, "--export %s: %s: %s", export->name, export_option_name(culprit),
                    config_reason_text(reason));
        free(reason);
    }
    return ret;

fail_key_path:
    error_message_set(message, ret, "--export %s: path: %s", export->name, config_reason_text(reason));
    free(reason);
    return ret;
}

/* "NAME=PATH[,key=value]..." */
static int parse_export_flag(const char *text, struct lunad_config *flags, char **message)
{
    const char *equals = strchr(text, '=');
    if (!equals)
        return error_message_set(message, -EINVAL,
                           "--export '%s': expected NAME=PATH[,key=value]...", text);
    char *name = strndup(text, (size_t)(equals - text));
    if (!name)
        return -ENOMEM;
    char *reason = NULL;
    int ret = export_name_check(name, &reason);
    if (ret < 0) {
        free(name);
        error_message_set(message, ret, "--export '%s': %s", text, config_reason_text(reason));
        free(reason);
        return ret;
    }
    if (lunad_config_find_export(flags, name) >= 0) {
        ret = error_message_set(message, -EINVAL, "--export %s: duplicate export name", name);
        free(name);
        return ret;
    }

    struct export_config export;
    char *buffer = NULL;
    char **fields = NULL;
    size_t count = 0;
    ret = export_config_start(&export, name);
    free(name);
    if (ret == 0)
        ret = split_fields(equals + 1, &buffer, &fields, &count);
    if (ret == 0)
        ret = parse_export_fields(&export, fields, count, message);
    if (ret == 0)
        ret = lunad_config_add_export(flags, &export);
    export_config_clear(&export);
    free(fields);
    free(buffer);
    return ret;
}

static int parse_flag(int option, const char *value, struct cli_request *request, char **message)
{
    struct lunad_config *flags = &request->flags;
    const char *flag = NULL;
    for (const struct option *o = long_options; o->name; o++)
        if (o->val == option)
            flag = o->name;
    char flag_text[32];
    snprintf(flag_text, sizeof(flag_text), "--%s", flag ? flag : "?");
    if (value && value[0] == '\0')
        return error_message_set(message, -EINVAL, "%s: empty value", flag_text);

    char *reason = NULL;
    int ret = 0;
    switch (option) {
    case OPTION_CONFIG:
    case OPTION_CHECK_CONFIG:
        if (request->config_path)
            return error_message_set(message, -EINVAL, "%s: a configuration file was already given (%s %s)",
                               flag_text, request->config_flag, request->config_path);
        request->config_path = value;
        request->config_flag = option == OPTION_CONFIG ? "--config" : "--check-config";
        request->check = option == OPTION_CHECK_CONFIG;
        return 0;
    case OPTION_NBD: {
        struct listen_address address;
        ret = listen_address_parse_reason(value, NULL, &address, &reason);
        if (ret < 0)
            return flag_fail(message, flag_text, reason, ret);
        ret = lunad_config_add_nbd_listen(flags, &address);
        if (ret < 0)
            listen_address_clear(&address);
        return ret;
    }
    case OPTION_ISCSI: {
        struct listen_address address;
        ret = listen_address_parse_reason(value, "3260", &address, &reason);
        if (ret < 0)
            return flag_fail(message, flag_text, reason, ret);
        ret = lunad_config_add_iscsi_listen(flags, &address);
        if (ret < 0)
            listen_address_clear(&address);
        return ret;
    }
    case OPTION_TARGET:
        ret = iscsi_target_flag_parse(flags, value, &reason);
        if (ret < 0)
            return flag_fail(message, flag_text, reason, ret);
        return 0;
    case OPTION_UNIX:
        ret = config_check_unix_socket(value, &reason);
        if (ret < 0)
            return flag_fail(message, flag_text, reason, ret);
        return lunad_config_add_unix_socket(flags, value);
    case OPTION_EXPORT:
        return parse_export_flag(value, flags, message);
    case OPTION_WORKERS:
        ret = config_parse_workers(value, &flags->workers, &reason);
        if (ret < 0)
            return flag_fail(message, flag_text, reason, ret);
        request->workers_given = true;
        return 0;
    case OPTION_LOG_LEVEL:
        ret = config_parse_log_level(value, &flags->log_level, &reason);
        if (ret < 0)
            return flag_fail(message, flag_text, reason, ret);
        request->log_level_given = true;
        return 0;
    case OPTION_PIDFILE:
        return config_replace_string(&flags->pidfile, value);
    case OPTION_STATE_DIR:
        return config_replace_string(&flags->state_dir, value);
    case OPTION_ADMIN_SOCKET: {
        ret = config_check_unix_socket(value, &reason);
        if (ret < 0)
            return flag_fail(message, flag_text, reason, ret);
        char *copy = strdup(value);
        if (!copy)
            return -ENOMEM;
        free(flags->admin_socket);
        flags->admin_socket = copy;
        return 0;
    }
    }
    return error_message_set(message, -EINVAL, "internal error: unhandled option %d", option);
}

/* Move a list from flags into config, replacing config's. */
/* A string flag given on the command line replaces the file's key. */
static void take_string(char **result, char **flag)
{
    if (*flag) {
        free(*result);
        *result = *flag;
        *flag = NULL;
    }
}

static void take_listeners(struct lunad_config *config, struct lunad_config *flags)
{
    if (flags->nbd_listen_count) {
        lunad_config_clear_nbd_listen(config);
        config->nbd_listen = flags->nbd_listen;
        config->nbd_listen_count = flags->nbd_listen_count;
        flags->nbd_listen = NULL;
        flags->nbd_listen_count = 0;
    }
    if (flags->iscsi_listen_count) {
        lunad_config_clear_iscsi_listen(config);
        config->iscsi_listen = flags->iscsi_listen;
        config->iscsi_listen_count = flags->iscsi_listen_count;
        flags->iscsi_listen = NULL;
        flags->iscsi_listen_count = 0;
    }
    if (flags->unix_socket_count) {
        lunad_config_clear_unix_sockets(config);
        config->unix_sockets = flags->unix_sockets;
        config->unix_socket_count = flags->unix_socket_count;
        flags->unix_sockets = NULL;
        flags->unix_socket_count = 0;
    }
}

/* The base (file, empty, or embedded default) with the flags applied. */
static int build(struct cli_request *request, struct lunad_config *result, char **message)
{
    struct lunad_config *flags = &request->flags;
    int ret;
    if (request->config_path) {
        ret = lunad_config_load_file(request->config_path, result, message);
    } else if (flags->export_count || flags->target_count) {
        result->source = strdup("command line");
        ret = result->source ? 0 : -ENOMEM;
    } else {
        ret = lunad_config_load_string(lunad_config_default_text(), "embedded default", result,
                                       message);
    }
    if (ret < 0)
        return ret;

    take_listeners(result, flags);
    if (request->workers_given)
        result->workers = flags->workers;
    if (request->log_level_given)
        result->log_level = flags->log_level;
    take_string(&result->pidfile, &flags->pidfile);
    take_string(&result->admin_socket, &flags->admin_socket);
    take_string(&result->state_dir, &flags->state_dir);
    for (size_t i = 0; i < flags->export_count; i++) {
        struct export_config *export = &flags->exports[i];
        if (lunad_config_find_export(result, export->name) >= 0)
            return error_message_set(message, -EINVAL,
                               "--export %s: duplicate export name (already defined in %s)",
                               export->name, result->source);
        ret = lunad_config_add_export(result, export);
        if (ret < 0)
            return ret;
    }
    for (size_t i = 0; i < flags->target_count; i++) {
        struct iscsi_target_config *target = &flags->targets[i], *added;
        char *reason = NULL;
        ret = lunad_config_add_target(result, target->iqn, &added, &reason);
        if (ret < 0) {
            error_message_set(message, ret, "--target %s: %s", target->iqn, config_reason_text(reason));
            free(reason);
            return ret;
        }
        free(added->iqn);
        *added = *target; /* the flag's LUNs move over */
        *target = (struct iscsi_target_config){0};
    }
    /* Loopback listeners for quick use: exports without any listener serve NBD, targets iSCSI. */
    if (flags->export_count && result->nbd_listen_count == 0 && result->unix_socket_count == 0 &&
        result->iscsi_listen_count == 0 && flags->target_count == 0) {
        struct listen_address loopback;
        ret = listen_address_parse("127.0.0.1", NULL, &loopback);
        if (ret == 0 && (ret = lunad_config_add_nbd_listen(result, &loopback)) < 0)
            listen_address_clear(&loopback);
        if (ret < 0)
            return ret;
    }
    if (flags->target_count && result->iscsi_listen_count == 0) {
        struct listen_address loopback;
        ret = listen_address_parse("127.0.0.1", "3260", &loopback);
        if (ret == 0 && (ret = lunad_config_add_iscsi_listen(result, &loopback)) < 0)
            listen_address_clear(&loopback);
        if (ret < 0)
            return ret;
    }
    return lunad_config_validate(result, message);
}

int lunad_cli_parse(int argc, char **argv, struct lunad_config *config, char **error_message)
{
    char *ignored = NULL;
    char **message = error_message ? error_message : &ignored;
    *message = NULL;

    struct cli_request request = {0};
    lunad_config_init(&request.flags);
    /* 0, not 1: glibc then also resets its internal state, so a reload can parse again. */
    optind = 0;
    opterr = 0;
    int ret = 0;
    bool exit_ok = false;
    for (;;) {
        int option = getopt_long(argc, argv, "+:hV", long_options, NULL);
        if (option == -1)
            break;
        if (option == 'h') {
            fputs(usage_text, stdout);
            exit_ok = true;
            break;
        }
        if (option == 'V') {
            printf("lunad %s\n", LUNA_VERSION);
            exit_ok = true;
            break;
        }
        if (option == ':') {
            ret = error_message_set(message, -EINVAL, "option '%s' needs a value (see lunad --help)",
                              argv[optind - 1]);
            break;
        }
        if (option == '?') {
            /* glibc sets optopt to 0 for an unknown long option, to its value for "--help=x". */
            if (optopt == 0)
                ret = error_message_set(message, -EINVAL, "unknown option '%s' (see lunad --help)",
                                  argv[optind - 1]);
            else if (optopt == 'h' || optopt == 'V' || optopt >= OPTION_CONFIG)
                ret = error_message_set(message, -EINVAL, "option '%s' takes no value", argv[optind - 1]);
            else
                ret = error_message_set(message, -EINVAL, "unknown option '-%c' (see lunad --help)",
                                  optopt);
            break;
        }
        ret = parse_flag(option, optarg, &request, message);
        if (ret < 0)
            break;
    }
    if (ret == 0 && !exit_ok && optind < argc)
        ret = error_message_set(message, -EINVAL, "unexpected argument '%s' (see lunad --help)",
                          argv[optind]);

    if (ret == 0 && !exit_ok) {
        struct lunad_config result;
        lunad_config_init(&result);
        ret = build(&request, &result, message);
        if (ret == 0) {
            lunad_config_clear(config);
            *config = result;
        } else {
            lunad_config_clear(&result);
        }
    }
    lunad_config_clear(&request.flags);
    if (ret == -ENOMEM && !*message)
        *message = config_printf("out of memory");
    free(ignored);
    if (ret < 0)
        return ret;
    if (exit_ok)
        return LUNAD_CLI_EXIT_OK;
    return request.check ? LUNAD_CLI_CHECK : LUNAD_CLI_RUN;
}
