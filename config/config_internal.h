/*
 * config internals: what the INI reader and the command line share.
 *
 * A config key and its flag go through the same value parsers, so they
 * accept the same spellings and fail with the same words.  Parsers return 0
 * or -EINVAL with *reason, a malloc'd explanation that says what was wrong
 * but not where; the caller prefixes the origin (file, line, section and
 * key, or the flag).  *reason may be NULL after a failure when even the
 * explanation could not be allocated.
 */
#ifndef LUNA_CONFIG_CONFIG_INTERNAL_H
#define LUNA_CONFIG_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error_message.h"
#include "config/config.h"

#define LUNA_WORKERS_MAX 256

/* malloc'd printf; NULL when out of memory. */
char *config_printf(const char *format, ...) __attribute__((format(printf, 1, 2)));


/* Grow an array by one element (the arrays are small, so no doubling): 0 or -ENOMEM. */
int config_grow(void **array, size_t count, size_t element_size);
/* Replace *slot with a copy of value: 0 or -ENOMEM (then *slot is unchanged). */
int config_replace_string(char **slot, const char *value);

/* reason, or a stand-in when it could not be allocated. */
const char *config_reason_text(const char *reason);

/* ---- values (config_values.c) ---- */

int config_parse_bool(const char *text, bool *out, char **reason);
/* Bytes with optional binary suffix K M G T (optionally followed by B or iB); > 0. */
int config_parse_size(const char *text, uint64_t *out, char **reason);
int config_parse_workers(const char *text, unsigned *out, char **reason);
int config_parse_log_level(const char *text, enum log_level *out, char **reason);
/* Whole seconds within [minimum, maximum]. */
int config_parse_seconds(const char *text, unsigned minimum, unsigned maximum, unsigned *out, char **reason);
/* A Unix socket path must fit in sockaddr_un.sun_path. */
int config_check_unix_socket(const char *text, char **reason);

/* listen_address_parse with an explanation (listen_address.c). */
int listen_address_parse_reason(const char *text, const char *default_port,
                                struct listen_address *out, char **reason);

/* ---- export keys (export_options.c) ---- */

enum export_option {
    EXPORT_OPTION_PATH,
    EXPORT_OPTION_FORMAT,
    EXPORT_OPTION_READONLY,
    EXPORT_OPTION_CACHE,
    EXPORT_OPTION_AIO,
    EXPORT_OPTION_DISCARD,
    EXPORT_OPTION_DESCRIPTION,
    EXPORT_OPTION_CREATE_SIZE,
    EXPORT_OPTION_L2_CACHE_SIZE,
    EXPORT_OPTION_OVERLAY,
    EXPORT_OPTION_LVM_DEVICES,
    EXPORT_OPTION_RECONNECT_TIMEOUT,
    EXPORT_OPTION_COUNT,
};

/* "path, format, ..." for messages. */
#define EXPORT_OPTION_LIST                                                                                    \
    "path, format, readonly, cache, aio, discard, description, create_size, l2_cache_size, overlay, lvm_devices, " \
    "reconnect_timeout"

/* Index of a key ("create_size"; "create-size" too), or -1. */
int export_option_lookup(const char *key);
const char *export_option_name(enum export_option option);

/* export_config with its defaults and a copy of name; NULL name stays NULL. */
int export_config_start(struct export_config *export, const char *name);
/* Set one key from its text form; replaces a previous value. */
int export_option_set(struct export_config *export, enum export_option option, const char *value,
                      char **reason);
/* Checks within one export (path present, create_size only for raw files). */
int export_config_check(const struct export_config *export, enum export_option *culprit,
                        char **reason);
/* Export names as NBD carries them: 1 to 4096 bytes. */
int export_name_check(const char *name, char **reason);

/* ---- building a lunad_config (config.c) ---- */

/* Each takes ownership of what it is given on success only. */
int lunad_config_add_nbd_listen(struct lunad_config *config, struct listen_address *address);
int lunad_config_add_unix_socket(struct lunad_config *config, const char *path);
int lunad_config_add_export(struct lunad_config *config, struct export_config *export);
void lunad_config_clear_nbd_listen(struct lunad_config *config);
void lunad_config_clear_unix_sockets(struct lunad_config *config);
/* iSCSI portals and targets (iscsi_targets.c). */
int lunad_config_add_iscsi_listen(struct lunad_config *config, struct listen_address *address);
void lunad_config_clear_iscsi_listen(struct lunad_config *config);
void lunad_config_clear_targets(struct lunad_config *config);
void iscsi_target_config_clear(struct iscsi_target_config *target);
/* A new [target IQN]; *out stays valid until the next target is added. */
int lunad_config_add_target(struct lunad_config *config, const char *iqn, struct iscsi_target_config **out,
                            char **reason);
int iscsi_target_add_lun(struct iscsi_target_config *target, uint64_t number, const char *export_name,
                         char **reason);
/* A CHAP key (chap_user, chap_secret, mutual_chap_user, mutual_chap_secret); *known false for others. */
int iscsi_chap_key_set(struct iscsi_chap *chap, const char *key, const char *value, bool *known);
/* A key of [target IQN]: lun.N, alias, initiators, the CHAP keys. */
int iscsi_target_key_set(struct iscsi_target_config *target, const char *key, const char *value, char **reason);
/* --target IQN=EXPORT[,EXPORT...]: LUNs 0, 1, ... in order. */
int iscsi_target_flag_parse(struct lunad_config *config, const char *text, char **reason);
int lunad_config_validate_targets(const struct lunad_config *config, const char *source, char **error_message);
/* Index of the export called name, or -1. */
long lunad_config_find_export(const struct lunad_config *config, const char *name);

#endif
