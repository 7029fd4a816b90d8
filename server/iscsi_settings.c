#include "iscsi_settings.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int iscsi_settings_build(const struct lunad_config *config, struct iscsi_settings **out)
{
    struct iscsi_settings *settings = calloc(1, sizeof(*settings));
    char **portals = calloc(config->iscsi_listen_count ? config->iscsi_listen_count : 1, sizeof(*portals));
    struct iscsi_target_config *targets = NULL;
    if (!settings || !portals || iscsi_targets_copy(config->targets, config->target_count, &targets) < 0) {
        free(settings);
        free(portals);
        return -ENOMEM;
    }
    settings->targets = targets;
    settings->target_count = config->target_count;
    settings->portals = portals;
    settings->ping_interval = config->iscsi_ping_interval;
    if (iscsi_chap_copy(&settings->discovery_chap, &config->discovery_chap) < 0) {
        iscsi_settings_free(settings);
        return -ENOMEM;
    }
    for (size_t i = 0; i < config->iscsi_listen_count; i++) {
        const struct listen_address *address = &config->iscsi_listen[i];
        bool v6 = strchr(address->host, ':') != NULL;
        if (asprintf(&portals[i], v6 ? "[%s]:%s" : "%s:%s", address->host, address->port) < 0) {
            iscsi_settings_free(settings);
            return -ENOMEM;
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
    free(settings);
}
