/*
 * CHAP for the login's security stage (RFC 7143 §12.1.3, RFC 1994): the
 * target offers algorithm 5 (MD5) with an identifier and a random
 * 16-byte challenge, checks the initiator's CHAP_N / CHAP_R against the
 * configured user and secret, and for mutual CHAP answers the
 * initiator's own challenge with its name and response.  Binary values
 * are read as hex (0x...) or base64 (0b...) and written as hex.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <nettle/base64.h>
#include <nettle/md5.h>

#include "common/log.h"
#include "protocols/iscsi/iscsi_internal.h"

#define CHAP_MD5 5
#define CHALLENGE_SIZE 16u

/* A constant-time comparison: how long a wrong response takes must not say where it differs. */
static bool same_bytes(const uint8_t *a, const uint8_t *b, size_t length)
{
    uint8_t difference = 0;
    for (size_t i = 0; i < length; i++)
        difference |= a[i] ^ b[i];
    return difference == 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A binary value (§6.1): 0x / 0X hex or 0b / 0B base64.  Returns the length or -EINVAL. */
static int decode_binary(const char *text, uint8_t *out, size_t size)
{
    if (text[0] != '0' || text[1] == '\0')
        return -EINVAL;
    const char *digits = text + 2;
    size_t length = strlen(digits);
    if (text[1] == 'x' || text[1] == 'X') {
        size_t odd = length & 1, bytes = (length + 1) / 2;
        if (length == 0 || bytes > size)
            return -EINVAL;
        for (size_t i = 0; i < bytes; i++) {
            /* An odd count of digits has an implied leading zero. */
            int high = (i == 0 && odd) ? 0 : hex_value(digits[2 * i - odd]);
            int low = hex_value(digits[2 * i + 1 - odd]);
            if (high < 0 || low < 0)
                return -EINVAL;
            out[i] = (uint8_t)(high << 4 | low);
        }
        return (int)bytes;
    }
    if (text[1] == 'b' || text[1] == 'B') {
        if (length == 0 || BASE64_DECODE_LENGTH(length) > size)
            return -EINVAL;
        struct base64_decode_ctx ctx;
        base64_decode_init(&ctx);
        size_t decoded = size;
        if (!base64_decode_update(&ctx, &decoded, out, length, digits) || !base64_decode_final(&ctx))
            return -EINVAL;
        return (int)decoded;
    }
    return -EINVAL;
}

static void encode_hex(const uint8_t *bytes, size_t length, char *out)
{
    static const char digits[] = "0123456789abcdef";
    *out++ = '0';
    *out++ = 'x';
    for (size_t i = 0; i < length; i++) {
        *out++ = digits[bytes[i] >> 4];
        *out++ = digits[bytes[i] & 15];
    }
    *out = '\0';
}

/* RFC 1994: MD5 over the identifier, the secret and the challenge. */
static void chap_response(uint8_t id, const char *secret, const uint8_t *challenge, size_t challenge_length,
                          uint8_t out[MD5_DIGEST_SIZE])
{
    struct md5_ctx ctx;
    md5_init(&ctx);
    md5_update(&ctx, 1, &id);
    md5_update(&ctx, strlen(secret), (const uint8_t *)secret);
    md5_update(&ctx, challenge_length, challenge);
    md5_digest(&ctx, MD5_DIGEST_SIZE, out);
}

bool iscsi_chap_key(struct iscsi_chap_keys *keys, const char *key, const char *value)
{
    int n;
    if (strcmp(key, "CHAP_A") == 0) {
        keys->have_algorithms = true;
        /* A list of algorithm numbers: is MD5 among them? */
        for (const char *p = value; p && *p;) {
            char *end;
            long algorithm = strtol(p, &end, 10);
            if (end != p && algorithm == CHAP_MD5 && (*end == ',' || *end == '\0'))
                keys->md5_offered = true;
            p = strchr(p, ',');
            if (p)
                p++;
        }
    } else if (strcmp(key, "CHAP_N") == 0) {
        keys->have_name = true;
        snprintf(keys->name, sizeof(keys->name), "%s", value);
    } else if (strcmp(key, "CHAP_R") == 0) {
        keys->have_response = true;
        n = decode_binary(value, keys->response, sizeof(keys->response));
        keys->response_length = n < 0 ? 0 : (size_t)n;
        keys->malformed |= n < 0;
    } else if (strcmp(key, "CHAP_I") == 0) {
        char *end;
        long id = strtol(value, &end, 0);
        keys->have_id = true;
        keys->id = (uint8_t)id;
        keys->malformed |= end == value || *end != '\0' || id < 0 || id > 255;
    } else if (strcmp(key, "CHAP_C") == 0) {
        keys->have_challenge = true;
        n = decode_binary(value, keys->challenge, sizeof(keys->challenge));
        keys->challenge_length = n < 0 ? 0 : (size_t)n;
        keys->malformed |= n <= 0;
    } else {
        return false;
    }
    return true;
}

/* The first step: CHAP_A from the initiator, our identifier and challenge back. */
static const char *send_challenge(struct iscsi_session *session, const struct iscsi_chap_keys *keys,
                                  struct iscsi_text *answer)
{
    struct iscsi_chap_exchange *chap = &session->chap;
    if (!keys->md5_offered) {
        iscsi_text_add(answer, "CHAP_A", "Reject");
        return "CHAP without MD5 (algorithm 5)";
    }
    if (getrandom(chap->challenge, sizeof(chap->challenge), 0) != (ssize_t)sizeof(chap->challenge) ||
        getrandom(&chap->id, 1, 0) != 1)
        return "no random bytes for a CHAP challenge";
    char hex[2 + 2 * CHALLENGE_SIZE + 1];
    encode_hex(chap->challenge, sizeof(chap->challenge), hex);
    iscsi_text_add(answer, "CHAP_A", "%d", CHAP_MD5);
    iscsi_text_add(answer, "CHAP_I", "%u", chap->id);
    iscsi_text_add(answer, "CHAP_C", "%s", hex);
    chap->state = ISCSI_CHAP_CHALLENGED;
    return NULL;
}

/* The second step: check the initiator's answer; for mutual CHAP, answer its challenge. */
static const char *check_response(struct iscsi_session *session, const struct iscsi_chap *credentials,
                                  const struct iscsi_chap_keys *keys, struct iscsi_text *answer)
{
    struct iscsi_chap_exchange *chap = &session->chap;
    if (!keys->have_name || !keys->have_response || keys->malformed)
        return "CHAP_N and CHAP_R missing or malformed";
    uint8_t expected[MD5_DIGEST_SIZE];
    chap_response(chap->id, credentials->secret, chap->challenge, sizeof(chap->challenge), expected);
    bool name_ok = strcmp(keys->name, credentials->user) == 0;
    bool response_ok = keys->response_length == sizeof(expected) &&
                       same_bytes(keys->response, expected, sizeof(expected));
    if (!name_ok || !response_ok)
        return "wrong CHAP name or secret";
    if (credentials->mutual_user) {
        if (!keys->have_id || !keys->have_challenge)
            return "mutual CHAP configured, but the initiator sent no challenge";
        /* Our own challenge reflected back would let an attacker have us answer it for them. */
        if (keys->challenge_length == sizeof(chap->challenge) &&
            same_bytes(keys->challenge, chap->challenge, sizeof(chap->challenge)))
            return "the initiator's CHAP challenge is the target's own";
        uint8_t mine[MD5_DIGEST_SIZE];
        chap_response(keys->id, credentials->mutual_secret, keys->challenge, keys->challenge_length, mine);
        char hex[2 + 2 * MD5_DIGEST_SIZE + 1];
        encode_hex(mine, sizeof(mine), hex);
        iscsi_text_add(answer, "CHAP_N", "%s", credentials->mutual_user);
        iscsi_text_add(answer, "CHAP_R", "%s", hex);
    } else if (keys->have_challenge) {
        return "the initiator asks for mutual CHAP, which this target has no credentials for";
    }
    chap->state = ISCSI_CHAP_DONE;
    return NULL;
}

const char *iscsi_chap_step(struct iscsi_session *session, const struct iscsi_chap *credentials,
                            const struct iscsi_chap_keys *keys, struct iscsi_text *answer)
{
    bool any = keys->have_algorithms || keys->have_name || keys->have_response || keys->have_id ||
               keys->have_challenge;
    if (!any)
        return NULL;
    switch (session->chap.state) {
    case ISCSI_CHAP_OFFERED:
        if (!keys->have_algorithms)
            return "CHAP keys out of order (expected CHAP_A)";
        return send_challenge(session, keys, answer);
    case ISCSI_CHAP_CHALLENGED:
        return check_response(session, credentials, keys, answer);
    default:
        return "CHAP keys without AuthMethod=CHAP";
    }
}
