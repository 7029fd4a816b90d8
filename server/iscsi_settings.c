#include "iscsi_settings.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error_message.h"
#include "protocols/scsi/scsi_persist.h"

/* The APTPL store: DIR/reservations, DIR the configured state directory or systemd's. */
static int open_reservations(const struct lunad_config *config, struct iscsi_settings *settings,
                             char **error_message)
{
    const char *state_dir = config->state_dir ? config->state_dir : getenv("STATE_DIRECTORY");
    if (!state_dir || !*state_dir || config->target_count == 0)
        return 0;
    /* systemd may list several directories, separated by colons: the first is ours. */
    char *directory = NULL;
    int length = (int)strcspn(state_dir, config->state_dir ? "" : ":");
    if (asprintf(&directory, "%.*s/reservations", length, state_dir) < 0)
        return error_message_set(error_message, -ENOMEM, "out of memory");
    int rc = scsi_persist_store_open(directory, &settings->reservations, error_message);
    free(directory);
    return rc;
}

int iscsi_settings_build(const struct lunad_config *config, struct iscsi_settings **out, char **error_message)
{
    struct iscsi_settings *settings = calloc(1, sizeof(*settings));
    char **portals = calloc(config->iscsi_listen_count ? config->iscsi_listen_count : 1, sizeof(*portals));
    struct iscsi_target_config *targets = NULL;
    if (!settings || !portals || iscsi_targets_copy(config->targets, config->target_count, &targets) < 0) {
        free(settings);
        free(portals);
        return error_message_set(error_message, -ENOMEM, "out of memory at start-up");
    }
    settings->targets = targets;
    settings->target_count = config->target_count;
    settings->portals = portals;
    settings->ping_interval = config->iscsi_ping_interval;
    int rc = iscsi_chap_copy(&settings->discovery_chap, &config->discovery_chap) < 0
                 ? error_message_set(error_message, -ENOMEM, "out of memory at start-up")
                 : open_reservations(config, settings, error_message);
    if (rc < 0) {
        iscsi_settings_free(settings);
        return rc;
    }
    for (size_t i = 0; i < config->iscsi_listen_count; i++) {
        const struct listen_address *address = &config->iscsi_listen[i];
        bool v6 = strchr(address->host, ':') != NULL;
        if (asprintf(&portals[i], v6 ? "[%s]:%s" : "%s:%s", address->host, address->port) < 0) {
            iscsi_settings_free(settings);
            return error_message_set(error_message, -ENOMEM, "out of memory at start-up");
        }
        settings->portal_count++;
    }
    *out = settings;
    return 0;
}

void iscsi_settings_free(struct iscsi_settings *settings)
{
    if (!settings)
        return;
    iscsi_targets_free((struct iscsi_target_config *)settings->targets, settings->target_count);
    for (size_t i = 0; i < settings->portal_count; i++)
        free(settings->portals[i]);
    free((void *)settings->portals);
    iscsi_chap_clear(&settings->discovery_chap);
    scsi_persist_store_close(settings->reservations);
    free(settings);
}
