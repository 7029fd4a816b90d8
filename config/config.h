/*
 * config: what lunad is told to serve, from an INI file or the command line.
 *
 * Both sources produce the same struct lunad_config, validated the same
 * way, so a flag and a config key can never mean different things.  Every
 * error names its origin (file and line and key, or the flag) and lands in
 * one malloc'd message; nothing here logs or exits.  No arguments at all
 * gives the embedded default: NBD on 127.0.0.1:10809 exporting "demo", a
 * 1 GiB sparse file var/demo.img created on first start.
 */
#ifndef LUNA_CONFIG_CONFIG_H
#define LUNA_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "block/export.h"
#include "common/log.h"
#include "protocols/iscsi/iscsi_target.h"

#define LUNA_NBD_DEFAULT_PORT 10809

struct listen_address {
    char *host; /* numeric IPv4/IPv6 or a name; "" or "*" means any */
    char *port; /* service or number */
};

struct lunad_config {
    /* [server] */
    struct listen_address *nbd_listen;
    size_t nbd_listen_count;
    struct listen_address *iscsi_listen; /* iSCSI portals */
    size_t iscsi_listen_count;
    unsigned iscsi_ping_interval;  /* seconds of silence before a NOP-In ping; 0: never */
    char **unix_sockets;          /* paths */
    size_t unix_socket_count;
    unsigned workers;             /* 0 = one per CPU */
    enum log_level log_level;
    char *pidfile;                /* NULL: none */
    char *admin_socket;           /* lunactl's Unix socket; NULL: none */
    char *state_dir;              /* what lunad keeps across restarts (APTPL reservations); NULL: nothing */

    /* [export NAME], in file order */
    struct export_config *exports;
    size_t export_count;

    /* [target IQN], in file order */
    struct iscsi_target_config *targets;
    size_t target_count;
    struct iscsi_chap discovery_chap; /* [discovery] */

    char *source;                 /* file name, or "command line", or "embedded default" */
};

void lunad_config_init(struct lunad_config *config);
void lunad_config_clear(struct lunad_config *config);

/* Parse an INI file; on error returns -EINVAL (or -errno) and a message. */
int lunad_config_load_file(const char *path, struct lunad_config *config, char **error_message);

/* Parse INI text; origin names it in messages (e.g. "embedded default"). */
int lunad_config_load_string(const char *text, const char *origin,
                             struct lunad_config *config, char **error_message);

/* The embedded default configuration, as INI text. */
const char *lunad_config_default_text(void);

/*
 * Command line.  Results: LUNAD_CLI_RUN (serve config), LUNAD_CLI_EXIT_OK
 * (--help/--version printed to stdout), LUNAD_CLI_CHECK (--check-config:
 * config loaded, caller reports success), or a negative errno with a
 * message.
 */
enum lunad_cli_action {
    LUNAD_CLI_RUN = 0,
    LUNAD_CLI_EXIT_OK = 1,
    LUNAD_CLI_CHECK = 2,
};
int lunad_cli_parse(int argc, char **argv, struct lunad_config *config, char **error_message);

/* Cross-field checks: unique export names, at least one listener, ... */
int lunad_config_validate(const struct lunad_config *config, char **error_message);

/* Parse "HOST:PORT", "[V6]:PORT", "HOST" or ":PORT" (default port applies). */
int listen_address_parse(const char *text, const char *default_port, struct listen_address *out);
void listen_address_clear(struct listen_address *address);

/* A deep copy of targets (lunad keeps one for its iSCSI sessions across reloads). */
int iscsi_targets_copy(const struct iscsi_target_config *targets, size_t count, struct iscsi_target_config **out);
void iscsi_targets_free(struct iscsi_target_config *targets, size_t count);
int iscsi_chap_copy(struct iscsi_chap *out, const struct iscsi_chap *chap);
void iscsi_chap_clear(struct iscsi_chap *chap);

#endif
