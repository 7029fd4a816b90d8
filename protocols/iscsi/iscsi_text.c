/*
 * Text keys (RFC 7143 §6): parsing "key=value\0" lists, building answers,
 * and negotiating each operational key (§13) by its rule: list selection,
 * Boolean AND / OR, numerical minimum / maximum, or declarative.  luna's
 * side of each is LIO's default unless noted.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/iscsi/iscsi_internal.h"

#define KEY_MAX 63u
#define VALUE_MAX 8192u

/* luna's offers. */
#define TARGET_MAX_BURST 262144u
#define TARGET_FIRST_BURST 65536u
#define TARGET_MAX_OUTSTANDING_R2T 16u
#define TARGET_TIME2WAIT 2u
#define TARGET_TIME2RETAIN 20u

void iscsi_params_defaults(struct iscsi_params *params)
{
    *params = (struct iscsi_params){
        .max_recv_segment = ISCSI_LOGIN_MAX_SEGMENT,
        .max_burst = TARGET_MAX_BURST,
        .first_burst = TARGET_FIRST_BURST,
        .max_outstanding_r2t = 1,
        .initial_r2t = true,
        .immediate_data = true,
        .time2wait = TARGET_TIME2WAIT,
        .time2retain = TARGET_TIME2RETAIN,
    };
}

void iscsi_text_add(struct iscsi_text *text, const char *key, const char *format, ...)
{
    char value[VALUE_MAX];
    va_list args;
    va_start(args, format);
    vsnprintf(value, sizeof(value), format, args);
    va_end(args);
    size_t need = strlen(key) + 1 + strlen(value) + 1;
    if (text->failed)
        return;
    if (text->length + need > text->capacity) {
        size_t capacity = text->capacity ? text->capacity * 2 : 512;
        while (capacity < text->length + need)
            capacity *= 2;
        char *grown = realloc(text->data, capacity);
        if (!grown) {
            text->failed = true;
            return;
        }
        text->data = grown;
        text->capacity = capacity;
    }
    text->length += (size_t)sprintf(text->data + text->length, "%s=%s", key, value) + 1;
}

int iscsi_text_each(const char *data, size_t length, int (*fn)(void *opaque, const char *key, const char *value),
                    void *opaque)
{
    size_t at = 0;
    while (at < length) {
        size_t end = at;
        while (end < length && data[end] != '\0')
            end++;
        if (end == at) { /* padding or an empty pair */
            at++;
            continue;
        }
        size_t pair_length = end - at;
        const char *equals = memchr(data + at, '=', pair_length);
        if (!equals || equals == data + at)
            return -EINVAL;
        size_t key_length = (size_t)(equals - (data + at)), value_length = pair_length - key_length - 1;
        if (key_length > KEY_MAX || value_length >= VALUE_MAX)
            return -EINVAL;
        char key[KEY_MAX + 1], value[VALUE_MAX];
        memcpy(key, data + at, key_length);
        key[key_length] = '\0';
        memcpy(value, equals + 1, value_length);
        value[value_length] = '\0';
        int ret = fn(opaque, key, value);
        if (ret < 0)
            return ret;
        at = end + 1;
    }
    return 0;
}

static int parse_boolean(const char *value, bool *out)
{
    if (strcmp(value, "Yes") == 0)
        *out = true;
    else if (strcmp(value, "No") == 0)
        *out = false;
    else
        return -EINVAL;
    return 0;
}

/* A numerical value (decimal, or hexadecimal with 0x) within [low, high]. */
static int parse_number(const char *value, uint32_t low, uint32_t high, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(value, &end, 0);
    if (errno || end == value || *end || value[0] == '-' || n < low || n > high)
        return -EINVAL;
    *out = (uint32_t)n;
    return 0;
}

/* The first value of a list ("CRC32C,None") that luna supports, or NULL. */
static const char *first_supported_digest(const char *list)
{
    for (const char *p = list; p && *p;) {
        size_t length = strcspn(p, ",");
        if (length == 6 && strncmp(p, "CRC32C", 6) == 0)
            return "CRC32C";
        if (length == 4 && strncmp(p, "None", 4) == 0)
            return "None";
        p = p[length] ? p + length + 1 : NULL;
    }
    return NULL;
}

/* Keys that only mean something in a Normal session (§13: "LO" / session-wide data keys). */
static bool normal_session_only(const char *key)
{
    static const char *const keys[] = {"InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength",
                                       "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder",
                                       "MaxConnections", "DefaultTime2Wait", "DefaultTime2Retain"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcmp(key, keys[i]) == 0)
            return true;
    return false;
}

static uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

int iscsi_negotiate_key(struct iscsi_params *params, bool discovery, const char *key, const char *value,
                        struct iscsi_text *answer)
{
    uint32_t n;
    bool flag;
    if (discovery && normal_session_only(key)) {
        iscsi_text_add(answer, key, "Irrelevant");
        return 0;
    }
    if (strcmp(key, "HeaderDigest") == 0 || strcmp(key, "DataDigest") == 0) {
        /* The first of the initiator's choices luna supports (§6.2.1). */
        const char *chosen = first_supported_digest(value);
        if (!chosen)
            return -EINVAL;
        bool crc32c = strcmp(chosen, "CRC32C") == 0;
        if (key[0] == 'H')
            params->header_digest = crc32c;
        else
            params->data_digest = crc32c;
        iscsi_text_add(answer, key, "%s", chosen);
    } else if (strcmp(key, "MaxRecvDataSegmentLength") == 0) {
        /* Declarative: how much the initiator takes per PDU; ours is declared by the login. */
        if (parse_number(value, 512, 16777215, &n) < 0)
            return -EINVAL;
        params->max_recv_segment = n;
    } else if (strcmp(key, "MaxConnections") == 0) {
        if (parse_number(value, 1, 65535, &n) < 0)
            return -EINVAL;
        iscsi_text_add(answer, key, "1"); /* minimum of theirs and our one */
    } else if (strcmp(key, "InitialR2T") == 0) {
        if (parse_boolean(value, &flag) < 0)
            return -EINVAL;
        params->initial_r2t = true; /* OR with our Yes */
        iscsi_text_add(answer, key, "Yes");
    } else if (strcmp(key, "ImmediateData") == 0) {
        if (parse_boolean(value, &flag) < 0)
            return -EINVAL;
        params->immediate_data = flag; /* AND with our Yes */
        iscsi_text_add(answer, key, "%s", flag ? "Yes" : "No");
    } else if (strcmp(key, "DataPDUInOrder") == 0 || strcmp(key, "DataSequenceInOrder") == 0) {
        if (parse_boolean(value, &flag) < 0)
            return -EINVAL;
        iscsi_text_add(answer, key, "Yes"); /* OR with our Yes */
    } else if (strcmp(key, "MaxBurstLength") == 0) {
        if (parse_number(value, 512, 16777215, &n) < 0)
            return -EINVAL;
        params->max_burst = min_u32(n, TARGET_MAX_BURST);
        if (params->first_burst > params->max_burst)
            params->first_burst = params->max_burst;
        iscsi_text_add(answer, key, "%u", params->max_burst);
    } else if (strcmp(key, "FirstBurstLength") == 0) {
        if (parse_number(value, 512, 16777215, &n) < 0)
            return -EINVAL;
        /* Answered by iscsi_negotiation_finish: a MaxBurstLength later in the keys may lower it. */
        params->first_burst = min_u32(n, TARGET_FIRST_BURST);
        params->first_burst_offered = true;
    } else if (strcmp(key, "MaxOutstandingR2T") == 0) {
        if (parse_number(value, 1, 65535, &n) < 0)
            return -EINVAL;
        params->max_outstanding_r2t = min_u32(n, TARGET_MAX_OUTSTANDING_R2T);
        iscsi_text_add(answer, key, "%u", params->max_outstanding_r2t);
    } else if (strcmp(key, "DefaultTime2Wait") == 0) {
        if (parse_number(value, 0, 3600, &n) < 0)
            return -EINVAL;
        params->time2wait = n > TARGET_TIME2WAIT ? n : TARGET_TIME2WAIT; /* maximum */
        iscsi_text_add(answer, key, "%u", params->time2wait);
    } else if (strcmp(key, "DefaultTime2Retain") == 0) {
        if (parse_number(value, 0, 3600, &n) < 0)
            return -EINVAL;
        params->time2retain = min_u32(n, TARGET_TIME2RETAIN);
        iscsi_text_add(answer, key, "%u", params->time2retain);
    } else if (strcmp(key, "ErrorRecoveryLevel") == 0) {
        if (parse_number(value, 0, 2, &n) < 0)
            return -EINVAL;
        iscsi_text_add(answer, key, "0");
    } else if (strcmp(key, "IFMarker") == 0 || strcmp(key, "OFMarker") == 0) {
        iscsi_text_add(answer, key, "No"); /* RFC 3720 markers, gone from RFC 7143 */
    } else if (strcmp(key, "IFMarkInt") == 0 || strcmp(key, "OFMarkInt") == 0) {
        iscsi_text_add(answer, key, "Irrelevant");
    } else {
        iscsi_text_add(answer, key, "NotUnderstood");
    }
    return 0;
}

void iscsi_negotiation_finish(struct iscsi_params *params, struct iscsi_text *answer)
{
    if (params->first_burst > params->max_burst) /* FirstBurstLength never exceeds MaxBurstLength (§13.14) */
        params->first_burst = params->max_burst;
    if (params->first_burst_offered)
        iscsi_text_add(answer, "FirstBurstLength", "%u", params->first_burst);
    params->first_burst_offered = false;
}
