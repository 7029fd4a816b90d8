/*
 * iSCSI in the configuration: [target IQN] and [discovery]
 * sections (alias, lun.N = EXPORT), the --target flag's IQN=EXPORT[,...]
 * form, the checks that need the whole configuration (every LUN names an
 * export), and a deep copy lunad keeps for its sessions across reloads.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

#define ISCSI_LUN_MAX 16383 /* flat space addressing: 14 bits */

void iscsi_chap_clear(struct iscsi_chap *chap)
{
    free(chap->user);
    free(chap->secret);
    free(chap->mutual_user);
    free(chap->mutual_secret);
    *chap = (struct iscsi_chap){0};
}

void iscsi_target_config_clear(struct iscsi_target_config *target)
{
    free(target->iqn);
    free(target->alias);
    iscsi_chap_clear(&target->chap);
    for (size_t i = 0; i < target->initiator_count; i++)
        free(target->initiators[i]);
    free(target->initiators);
    for (size_t i = 0; i < target->lun_count; i++)
        free(target->luns[i].export_name);
    free(target->luns);
    *target = (struct iscsi_target_config){0};
}

void lunad_config_clear_targets(struct lunad_config *config)
{
    for (size_t i = 0; i < config->target_count; i++)
        iscsi_target_config_clear(&config->targets[i]);
    free(config->targets);
    config->targets = NULL;
    config->target_count = 0;
}

int lunad_config_add_target(struct lunad_config *config, const char *iqn, struct iscsi_target_config **out,
                            char **reason)
{
    if (!iscsi_name_valid(iqn)) {
        *reason = config_printf("'%s' is not an iSCSI name (iqn.YYYY-MM.reversed.domain[:name], lower case)",
                                iqn);
        return -EINVAL;
    }
    for (size_t i = 0; i < config->target_count; i++)
        if (strcmp(config->targets[i].iqn, iqn) == 0) {
            *reason = config_printf("target %s is defined twice", iqn);
            return -EINVAL;
        }
    if (config_grow((void **)&config->targets, config->target_count, sizeof(*config->targets)) < 0)
        return -ENOMEM;
    struct iscsi_target_config *target = &config->targets[config->target_count];
    *target = (struct iscsi_target_config){.iqn = strdup(iqn)};
    if (!target->iqn)
        return -ENOMEM;
    config->target_count++;
    *out = target;
    return 0;
}

/* Add LUN number -> export, keeping the LUNs in increasing order. */
int iscsi_target_add_lun(struct iscsi_target_config *target, uint64_t number, const char *export_name,
                         char **reason)
{
    if (number > ISCSI_LUN_MAX) {
        *reason = config_printf("LUN %llu: at most %d", (unsigned long long)number, ISCSI_LUN_MAX);
        return -EINVAL;
    }
    size_t at = 0;
    while (at < target->lun_count && target->luns[at].number < number)
        at++;
    if (at < target->lun_count && target->luns[at].number == number) {
        *reason = config_printf("LUN %llu is given twice", (unsigned long long)number);
        return -EINVAL;
    }
    if (config_grow((void **)&target->luns, target->lun_count, sizeof(*target->luns)) < 0)
        return -ENOMEM;
    char *name = strdup(export_name);
    if (!name)
        return -ENOMEM;
    struct iscsi_lun_config *luns = target->luns;
    memmove(&luns[at + 1], &luns[at], (target->lun_count - at) * sizeof(*luns));
    luns[at] = (struct iscsi_lun_config){.number = number, .export_name = name};
    target->lun_count++;
    return 0;
}

int iscsi_chap_key_set(struct iscsi_chap *chap, const char *key, const char *value, bool *known)
{
    *known = true;
    if (strcmp(key, "chap_user") == 0)
        return config_replace_string(&chap->user, value);
    if (strcmp(key, "chap_secret") == 0)
        return config_replace_string(&chap->secret, value);
    if (strcmp(key, "mutual_chap_user") == 0)
        return config_replace_string(&chap->mutual_user, value);
    if (strcmp(key, "mutual_chap_secret") == 0)
        return config_replace_string(&chap->mutual_secret, value);
    *known = false;
    return 0;
}

/* "iqn.a, iqn.b" or "iqn.a iqn.b": each must be an iSCSI name. */
static int set_initiators(struct iscsi_target_config *target, const char *value, char **reason)
{
    for (size_t i = 0; i < target->initiator_count; i++)
        free(target->initiators[i]);
    target->initiator_count = 0;
    const char *p = value;
    while (*p) {
        p += strspn(p, ", \t");
        size_t length = strcspn(p, ", \t");
        if (length == 0)
            break;
        char *name = strndup(p, length);
        if (!name)
            return -ENOMEM;
        if (!iscsi_name_valid(name)) {
            *reason = config_printf("'%s' is not an iSCSI name", name);
            free(name);
            return -EINVAL;
        }
        if (config_grow((void **)&target->initiators, target->initiator_count, sizeof(*target->initiators)) < 0) {
            free(name);
            return -ENOMEM;
        }
        target->initiators[target->initiator_count++] = name;
        p += length;
    }
    return 0;
}

int iscsi_target_key_set(struct iscsi_target_config *target, const char *key, const char *value, char **reason)
{
    bool known;
    int ret = iscsi_chap_key_set(&target->chap, key, value, &known);
    if (known)
        return ret;
    if (strcmp(key, "alias") == 0)
        return config_replace_string(&target->alias, value);
    if (strcmp(key, "initiators") == 0)
        return set_initiators(target, value, reason);
    if (strncmp(key, "lun.", 4) == 0 && key[4] >= '0' && key[4] <= '9') {
        char *end;
        errno = 0;
        unsigned long long number = strtoull(key + 4, &end, 10);
        if (errno == 0 && *end == '\0')
            return iscsi_target_add_lun(target, number, value, reason);
    }
    *reason = config_printf("unknown key (expected lun.N, alias, initiators, chap_user, chap_secret, "
                            "mutual_chap_user or mutual_chap_secret)");
    return -EINVAL;
}

int iscsi_target_flag_parse(struct lunad_config *config, const char *text, char **reason)
{
    const char *equals = strchr(text, '=');
    if (!equals || equals == text || equals[1] == '\0') {
        *reason = config_printf("expected IQN=EXPORT[,EXPORT...]");
        return -EINVAL;
    }
    char *iqn = strndup(text, (size_t)(equals - text));
    if (!iqn)
        return -ENOMEM;
    struct iscsi_target_config *target;
    int ret = lunad_config_add_target(config, iqn, &target, reason);
    free(iqn);
    uint64_t number = 0;
    for (const char *name = equals + 1; ret == 0; number++) {
        const char *comma = strchr(name, ',');
        size_t length = comma ? (size_t)(comma - name) : strlen(name);
        if (length == 0) {
            *reason = config_printf("an empty export name");
            return -EINVAL;
        }
        char *export_name = strndup(name, length);
        if (!export_name)
            return -ENOMEM;
        ret = iscsi_target_add_lun(target, number, export_name, reason);
        free(export_name);
        if (!comma)
            break;
        name = comma + 1;
    }
    return ret;
}

/* A user needs its secret and the other way round; mutual CHAP needs one-way CHAP and its own secret. */
static const char *chap_problem(const struct iscsi_chap *chap)
{
    if (!chap->user != !chap->secret)
        return "chap_user and chap_secret go together";
    if (!chap->mutual_user != !chap->mutual_secret)
        return "mutual_chap_user and mutual_chap_secret go together";
    if (chap->mutual_user && !chap->user)
        return "mutual CHAP needs chap_user and chap_secret too";
    if (chap->mutual_secret && strcmp(chap->mutual_secret, chap->secret) == 0)
        return "mutual_chap_secret must differ from chap_secret (RFC 7143 §12.1.3)";
    return NULL;
}

int lunad_config_validate_targets(const struct lunad_config *config, const char *source, char **error_message)
{
    const char *problem = chap_problem(&config->discovery_chap);
    if (problem)
        return error_message_set(error_message, -EINVAL, "%s: [discovery]: %s", source, problem);
    for (size_t i = 0; i < config->target_count; i++) {
        const struct iscsi_target_config *target = &config->targets[i];
        if ((problem = chap_problem(&target->chap)))
            return error_message_set(error_message, -EINVAL, "%s: [target %s]: %s", source, target->iqn, problem);
        if (target->lun_count == 0)
            return error_message_set(error_message, -EINVAL, "%s: [target %s]: no LUN (add lun.0 = EXPORT)",
                                     source, target->iqn);
        for (size_t j = 0; j < target->lun_count; j++)
            if (lunad_config_find_export(config, target->luns[j].export_name) < 0)
                return error_message_set(error_message, -EINVAL, "%s: [target %s] lun.%llu: no export '%s'",
                                         source, target->iqn, (unsigned long long)target->luns[j].number,
                                         target->luns[j].export_name);
    }
    if (config->target_count && config->iscsi_listen_count == 0)
        return error_message_set(error_message, -EINVAL,
                                 "%s: iSCSI targets but no iscsi_listen (add iscsi_listen to [server], or "
                                 "--iscsi ADDR:PORT)", source);
    return 0;
}

/* A copy of a possibly-NULL string; false when out of memory. */
static bool copy_optional(char **out, const char *text)
{
    *out = text ? strdup(text) : NULL;
    return !text || *out;
}

int iscsi_chap_copy(struct iscsi_chap *out, const struct iscsi_chap *chap)
{
    *out = (struct iscsi_chap){0};
    if (!copy_optional(&out->user, chap->user) || !copy_optional(&out->secret, chap->secret) ||
        !copy_optional(&out->mutual_user, chap->mutual_user) ||
        !copy_optional(&out->mutual_secret, chap->mutual_secret)) {
        iscsi_chap_clear(out);
        return -ENOMEM;
    }
    return 0;
}

int iscsi_targets_copy(const struct iscsi_target_config *targets, size_t count, struct iscsi_target_config **out)
{
    struct iscsi_target_config *copy = calloc(count ? count : 1, sizeof(*copy));
    if (!copy)
        return -ENOMEM;
    int ret = 0;
    for (size_t i = 0; i < count && ret == 0; i++) {
        copy[i].iqn = strdup(targets[i].iqn);
        copy[i].alias = targets[i].alias ? strdup(targets[i].alias) : NULL;
        copy[i].luns = calloc(targets[i].lun_count ? targets[i].lun_count : 1, sizeof(*copy[i].luns));
        if (!copy[i].iqn || (targets[i].alias && !copy[i].alias) || !copy[i].luns) {
            ret = -ENOMEM;
            break;
        }
        if (iscsi_chap_copy(&copy[i].chap, &targets[i].chap) < 0) {
            ret = -ENOMEM;
            break;
        }
        if (targets[i].initiator_count &&
            !(copy[i].initiators = calloc(targets[i].initiator_count, sizeof(*copy[i].initiators)))) {
            ret = -ENOMEM;
            break;
        }
        for (size_t j = 0; j < targets[i].initiator_count && ret == 0; j++) {
            if (!(copy[i].initiators[j] = strdup(targets[i].initiators[j])))
                ret = -ENOMEM;
            else
                copy[i].initiator_count++;
        }
        for (size_t j = 0; j < targets[i].lun_count && ret == 0; j++) {
            copy[i].luns[j].number = targets[i].luns[j].number;
            copy[i].luns[j].export_name = strdup(targets[i].luns[j].export_name);
            if (!copy[i].luns[j].export_name) {
                ret = -ENOMEM;
                break;
            }
            copy[i].lun_count++;
        }
    }
    if (ret < 0) {
        iscsi_targets_free(copy, count);
        return ret;
    }
    *out = copy;
    return 0;
}

void iscsi_targets_free(struct iscsi_target_config *targets, size_t count)
{
    for (size_t i = 0; targets && i < count; i++)
        iscsi_target_config_clear(&targets[i]);
    free(targets);
}
