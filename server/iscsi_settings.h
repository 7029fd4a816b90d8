/*
 * iscsi_settings: what lunad's iSCSI sessions are served from, built once
 * from the configuration at start-up (targets and portals, deep-copied so
 * a reload, which replaces the configuration, never pulls them from under
 * a live session; target changes take effect after a restart), and the
 * store of persistent reservations kept across restarts (APTPL), in the
 * state directory: state_dir, or systemd's $STATE_DIRECTORY.
 */
#ifndef LUNA_SERVER_ISCSI_SETTINGS_H
#define LUNA_SERVER_ISCSI_SETTINGS_H

#include "config/config.h"
#include "protocols/iscsi/iscsi_target.h"

/*
 * 0, or -errno and a malloc'd message (out of memory, or the state
 * directory's reservations cannot be read).  Blocking: start-up only.
 */
int iscsi_settings_build(const struct lunad_config *config, struct iscsi_settings **out, char **error_message);
void iscsi_settings_free(struct iscsi_settings *settings);

#endif
