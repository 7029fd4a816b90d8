/*
 * Value parsers shared by config keys and flags: booleans, sizes, worker
 * counts, log levels, Unix socket paths.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include "config/config_internal.h"

static int invalid(char **reason, char *text)
{
    *reason = text;
    return -EINVAL;
}

int config_parse_bool(const char *text, bool *out, char **reason)
{
    static const char *const yes[] = {"on", "yes", "true", "1"};
    static const char *const no[] = {"off", "no", "false", "0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return invalid(reason, config_printf("unknown value '%s' (expected on, off, yes, no, true, "
                                         "false, 1, 0)",
                                         text));
}

/* Binary multiplier of a size suffix ("", "K", "KiB", "kb", ...), or 0 when unknown. */
static uint64_t size_multiplier(const char *suffix)
{
    static const char units[] = "KMGT";
    if (suffix[0] == '\0')
        return 1;
    const char *unit = strchr(units, toupper((unsigned char)suffix[0]));
    if (!unit)
        return 0;
    const char *rest = suffix + 1;
    if (rest[0] != '\0' && strcasecmp(rest, "B") != 0 && strcasecmp(rest, "iB") != 0)
        return 0;
    return 1ull << (10 * (unit - units + 1));
}

int config_parse_size(const char *text, uint64_t *out, char **reason)
{
    static const char expected[] = "(expected a number of bytes with an optional suffix K, M, G "
                                   "or T, e.g. 1G)";
    /* strtoull would accept a sign and leading blanks; a size must start with a digit. */
    if (!isdigit((unsigned char)text[0]))
        return invalid(reason, config_printf("invalid size '%s' %s", text, expected));
    errno = 0;
    char *end = NULL;
    unsigned long long number = strtoull(text, &end, 10);
    if (errno == ERANGE)
        return invalid(reason, config_printf("size '%s' is too large", text));
    uint64_t multiplier = size_multiplier(end);
    if (multiplier == 0)
        return invalid(reason, config_printf("invalid size '%s' %s", text, expected));
    if (number > UINT64_MAX / multiplier)
        return invalid(reason, config_printf("size '%s' is too large", text));
    if (number == 0)
        return invalid(reason, config_printf("size '%s' must be more than 0", text));
    *out = (uint64_t)number * multiplier;
    return 0;
}

int config_parse_workers(const char *text, unsigned *out, char **reason)
{
    size_t digits = strspn(text, "0123456789");
    errno = 0;
    unsigned long number = digits == strlen(text) ? strtoul(text, NULL, 10) : 0;
    if (digits == 0 || digits != strlen(text) || errno == ERANGE || number > LUNA_WORKERS_MAX)
        return invalid(reason, config_printf("invalid value '%s' (expected 0 for one per CPU, or "
                                             "1 to %d)",
                                             text, LUNA_WORKERS_MAX));
    *out = (unsigned)number;
    return 0;
}

int config_parse_log_level(const char *text, enum log_level *out, char **reason)
{
    if (log_level_parse(text, out) == 0)
        return 0;
    return invalid(reason,
                   config_printf("unknown value '%s' (expected error, warn, info, debug)", text));
}

int config_check_unix_socket(const char *text, char **reason)
{
    size_t limit = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    if (text[0] == '\0')
        return invalid(reason, config_printf("empty path"));
    if (strlen(text) > limit)
        return invalid(reason, config_printf("path '%s' is too long for a Unix socket (at most "
                                             "%zu bytes)",
                                             text, limit));
    return 0;
}

int config_parse_seconds(const char *text, unsigned minimum, unsigned maximum, unsigned *out, char **reason)
{
    char *end;
    errno = 0;
    unsigned long seconds = strtoul(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || seconds < minimum || seconds > maximum) {
        *reason = config_printf("invalid value '%s' (expected seconds, %u to %u)", text, minimum, maximum);
        return -EINVAL;
    }
    *out = (unsigned)seconds;
    return 0;
}
