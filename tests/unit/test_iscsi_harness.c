#include "test_iscsi_harness.h"

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/aio.h"
#include "common/log.h"
#include "test_block_util.h"

static void settings_init(struct iscsi_harness *h, size_t extra_portals)
{
    h->luns[0] = (struct iscsi_lun_config){.number = 0, .export_name = "disk"};
    h->luns[1] = (struct iscsi_lun_config){.number = 1, .export_name = "pattern"};
    h->target = (struct iscsi_target_config){
        .iqn = IH_TARGET_IQN, .alias = IH_TARGET_ALIAS, .luns = h->luns, .lun_count = 2};
    h->portal_count = 2 + extra_portals;
    h->portals = calloc(h->portal_count, sizeof(*h->portals));
    cr_assert_not_null(h->portals);
    h->portals[0] = strdup(IH_PORTAL);
    h->portals[1] = strdup("0.0.0.0:3260");
    for (size_t i = 0; i < extra_portals; i++)
        cr_assert_gt(asprintf(&h->portals[2 + i], "198.51.100.%zu:3260", i + 1), 0);
    for (size_t i = 0; i < h->portal_count; i++)
        cr_assert_not_null(h->portals[i]);
    h->settings = (struct iscsi_settings){
        .targets = &h->target, .target_count = 1, .portals = h->portals, .portal_count = h->portal_count};
}

void ih_init(struct iscsi_harness *h, const struct ih_options *options)
{
    memset(h, 0, sizeof(*h));
    /* Refusals and violations are what many tests provoke: their warnings would drown the output. */
    log_set_level(getenv("LUNA_TEST_VERBOSE") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
    session_world_init(&h->world);
    /* The thread-pool engine: completions arrive through the loop, so a command stays executing until ih_wait. */
    h->disk_path = session_world_add_export(
        &h->world, &(struct session_export){.name = "disk", .size = IH_DISK_SIZE, .aio = BDEV_AIO_THREADS});
    session_world_add_export(&h->world, &(struct session_export){.name = "pattern",
                                                                 .size = IH_PATTERN_SIZE,
                                                                 .pattern = true,
                                                                 .readonly = true,
                                                                 .aio = BDEV_AIO_THREADS});
    settings_init(h, options ? options->extra_portals : 0);
    const uint8_t isid[6] = {0x80, 0x12, 0x34, 0x56, 0x00, 0x01}; /* random format (§11.12.5) */
    memcpy(h->isid, isid, sizeof(isid));
    h->cmd_sn = 0x1000;
    h->login_itt = 0x11;
    struct session_start start = {
        .peer = "test-initiator",
        .local = options && options->local ? options->local : IH_LOCAL,
        .exports = h->world.table,
        .ctx = h->world.ctx,
        .out = h->world.out,
        .ops = &session_world_ops,
        .opaque = &h->world,
        .settings = &h->settings,
    };
    h->session = iscsi_session_protocol.create(&start);
    cr_assert_not_null(h->session);
}

void ih_fini(struct iscsi_harness *h)
{
    session_world_fini(&h->world, &iscsi_session_protocol, h->session);
    for (size_t i = 0; i < h->portal_count; i++)
        free(h->portals[i]);
    free(h->portals);
}

/* server/connection.c process_input: payload targets are filled directly, the rest offered to input(). */
size_t ih_feed_some(struct iscsi_harness *h, const void *data, size_t length)
{
    const struct session_protocol *p = &iscsi_session_protocol;
    const uint8_t *bytes = data;
    size_t position = 0;
    while (position < length && p->status(h->session) == SESSION_ACTIVE) {
        size_t available = length - position;
        struct iovec target;
        if (p->payload(h->session, &target)) {
            cr_assert_gt(target.iov_len, 0, "a payload target of 0 bytes");
            size_t n = available < target.iov_len ? available : target.iov_len;
            memcpy(target.iov_base, bytes + position, n);
            position += n;
            p->payload_done(h->session, n);
            continue;
        }
        if (!p->wants_input(h->session))
            break;
        size_t offer = h->chunk && h->chunk < available ? h->chunk : available;
        size_t used = p->input(h->session, bytes + position, offer);
        cr_assert_leq(used, offer);
        position += used;
        if (used == 0 && !p->payload(h->session, &target))
            break;
    }
    return position;
}

/* A session that stopped (refused login, logout, violation) may leave the rest, padding included. */
void ih_feed(struct iscsi_harness *h, const void *data, size_t length)
{
    size_t used = ih_feed_some(h, data, length);
    if (used < length)
        cr_assert_neq(ih_status(h), SESSION_ACTIVE, "an active session took %zu of %zu bytes", used, length);
}

void ih_wait(struct iscsi_harness *h)
{
    aio_context_drain(h->world.ctx);
    cr_assert_eq(aio_context_pending(h->world.ctx), 0);
}

enum session_status ih_status(const struct iscsi_harness *h) { return iscsi_session_protocol.status(h->session); }
bool ih_wants_input(const struct iscsi_harness *h) { return iscsi_session_protocol.wants_input(h->session); }
bool ih_negotiated(const struct iscsi_harness *h) { return iscsi_session_protocol.negotiated(h->session); }
uint32_t ih_inflight(const struct iscsi_harness *h) { return iscsi_session_protocol.inflight(h->session); }

/* ---- output ---- */

size_t ih_output_left(struct iscsi_harness *h) { return session_world_output_left(&h->world); }

static const uint8_t *take(struct iscsi_harness *h, size_t n) { return session_world_take(&h->world, n); }

void ih_next(struct iscsi_harness *h, struct ih_pdu *pdu)
{
    memcpy(pdu->bhs, take(h, IH_BHS), IH_BHS);
    cr_assert_eq(pdu->bhs[4], 0, "the target sent additional header segments");
    pdu->length = load_be24(pdu->bhs + 5);
    pdu->data = pdu->length ? take(h, pdu->length) : NULL;
    uint32_t pad = (4 - (pdu->length & 3)) & 3;
    const uint8_t *padding = take(h, pad);
    for (uint32_t i = 0; i < pad; i++)
        cr_assert_eq(padding[i], 0, "padding byte %u is %#x", i, padding[i]);
}

void ih_expect_nothing(struct iscsi_harness *h)
{
    size_t left = ih_output_left(h);
    cr_assert_eq(left, 0, "%zu unexpected output bytes (opcode %#x)", left,
                 left ? h->world.output[h->world.output_position] & 0x3f : 0);
}

void ih_expect_stat_sn(struct iscsi_harness *h, const struct ih_pdu *pdu)
{
    cr_assert_eq(ih_stat_sn(pdu), h->exp_stat_sn, "StatSN %u, expected %u", ih_stat_sn(pdu), h->exp_stat_sn);
    h->exp_stat_sn++;
}

/* ---- building ---- */

uint32_t ih_keys(char *out, size_t size, ...)
{
    va_list args;
    va_start(args, size);
    size_t length = 0;
    for (const char *pair; (pair = va_arg(args, const char *)) != NULL;) {
        size_t n = strlen(pair) + 1;
        cr_assert_leq(length + n, size, "key buffer too small");
        memcpy(out + length, pair, n);
        length += n;
    }
    va_end(args);
    return (uint32_t)length;
}

void ih_send(struct iscsi_harness *h, uint8_t *bhs, const void *data, uint32_t length)
{
    static const uint8_t zeroes[4];
    store_be24(bhs + 5, length);
    ih_feed(h, bhs, IH_BHS);
    if (length)
        ih_feed(h, data, length);
    uint32_t pad = (4 - (length & 3)) & 3;
    if (pad)
        ih_feed(h, zeroes, pad);
}

void ih_lun_field(uint8_t *field, uint64_t lun)
{
    memset(field, 0, 8);
    field[1] = (uint8_t)lun;
}

void ih_login(struct iscsi_harness *h, uint8_t flags, uint16_t tsih, const char *keys, uint32_t length)
{
    uint8_t bhs[IH_BHS] = {IH_OP_LOGIN | IH_IMMEDIATE, flags, 0x00, 0x00};
    memcpy(bhs + 8, h->isid, 6);
    store_be16(bhs + 14, tsih);
    store_be32(bhs + 16, h->login_itt);
    store_be32(bhs + 24, h->cmd_sn); /* login requests carry the initial CmdSN without taking it */
    store_be32(bhs + 28, h->exp_stat_sn);
    ih_send(h, bhs, keys, length);
}

void ih_command_sn(struct iscsi_harness *h, uint32_t itt, uint8_t flags, uint64_t lun, uint32_t edtl,
                   const uint8_t *cdb, uint32_t cmd_sn, const void *immediate, uint32_t length)
{
    uint8_t bhs[IH_BHS] = {IH_OP_SCSI_COMMAND, flags};
    ih_lun_field(bhs + 8, lun);
    store_be32(bhs + 16, itt);
    store_be32(bhs + 20, edtl);
    store_be32(bhs + 24, cmd_sn);
    store_be32(bhs + 28, h->exp_stat_sn);
    memcpy(bhs + 32, cdb, 16);
    ih_send(h, bhs, immediate, length);
}

void ih_command(struct iscsi_harness *h, uint32_t itt, uint8_t flags, uint64_t lun, uint32_t edtl,
                const uint8_t *cdb, const void *immediate, uint32_t length)
{
    ih_command_sn(h, itt, flags, lun, edtl, cdb, h->cmd_sn++, immediate, length);
}

void ih_data_out(struct iscsi_harness *h, uint32_t itt, uint32_t ttt, uint64_t lun, uint32_t data_sn,
                 uint32_t offset, const void *data, uint32_t length, bool final)
{
    uint8_t bhs[IH_BHS] = {IH_OP_DATA_OUT, final ? IH_F : 0};
    ih_lun_field(bhs + 8, lun);
    store_be32(bhs + 16, itt);
    store_be32(bhs + 20, ttt);
    store_be32(bhs + 28, h->exp_stat_sn);
    store_be32(bhs + 36, data_sn);
    store_be32(bhs + 40, offset);
    ih_send(h, bhs, data, length);
}

void ih_nop_out(struct iscsi_harness *h, uint32_t itt, bool immediate, const void *data, uint32_t length)
{
    uint8_t bhs[IH_BHS] = {(uint8_t)(IH_OP_NOP_OUT | (immediate ? IH_IMMEDIATE : 0)), IH_F};
    store_be32(bhs + 16, itt);
    store_be32(bhs + 20, IH_RESERVED_TAG);
    store_be32(bhs + 24, immediate ? h->cmd_sn : h->cmd_sn++);
    store_be32(bhs + 28, h->exp_stat_sn);
    ih_send(h, bhs, data, length);
}

void ih_text(struct iscsi_harness *h, uint32_t itt, uint32_t ttt, uint8_t flags, const char *keys,
             uint32_t length)
{
    uint8_t bhs[IH_BHS] = {IH_OP_TEXT, flags};
    store_be32(bhs + 16, itt);
    store_be32(bhs + 20, ttt);
    store_be32(bhs + 24, h->cmd_sn++);
    store_be32(bhs + 28, h->exp_stat_sn);
    ih_send(h, bhs, keys, length);
}

void ih_logout(struct iscsi_harness *h, uint32_t itt, uint8_t reason)
{
    uint8_t bhs[IH_BHS] = {IH_OP_LOGOUT, (uint8_t)(IH_F | reason)};
    store_be32(bhs + 16, itt);
    store_be32(bhs + 24, h->cmd_sn++);
    store_be32(bhs + 28, h->exp_stat_sn);
    ih_send(h, bhs, NULL, 0);
}

void ih_tmf(struct iscsi_harness *h, uint32_t itt, uint8_t function, uint64_t lun, uint32_t ref_itt,
            uint32_t ref_cmd_sn)
{
    uint8_t bhs[IH_BHS] = {IH_OP_TMF | IH_IMMEDIATE, (uint8_t)(IH_F | function)};
    ih_lun_field(bhs + 8, lun);
    store_be32(bhs + 16, itt);
    store_be32(bhs + 20, ref_itt);
    store_be32(bhs + 24, h->cmd_sn);
    store_be32(bhs + 28, h->exp_stat_sn);
    store_be32(bhs + 32, ref_cmd_sn);
    ih_send(h, bhs, NULL, 0);
}

void ih_cdb_inquiry(uint8_t *cdb, uint16_t allocation)
{
    memset(cdb, 0, 16);
    cdb[0] = 0x12;
    store_be16(cdb + 3, allocation);
}

void ih_cdb_test_unit_ready(uint8_t *cdb) { memset(cdb, 0, 16); }

void ih_cdb_read10(uint8_t *cdb, uint32_t lba, uint16_t blocks)
{
    memset(cdb, 0, 16);
    cdb[0] = 0x28;
    store_be32(cdb + 2, lba);
    store_be16(cdb + 7, blocks);
}

void ih_cdb_write10(uint8_t *cdb, uint32_t lba, uint16_t blocks)
{
    ih_cdb_read10(cdb, lba, blocks);
    cdb[0] = 0x2a;
}

/* ---- parsing ---- */

const char *ih_key(const struct ih_pdu *pdu, const char *key)
{
    size_t key_length = strlen(key);
    const char *found = NULL;
    const char *text = (const char *)pdu->data;
    for (size_t at = 0; at < pdu->length;) {
        const char *end = memchr(text + at, '\0', pdu->length - at);
        cr_assert_not_null(end, "a key=value pair without its NUL terminator");
        if (strncmp(text + at, key, key_length) == 0 && text[at + key_length] == '=') {
            cr_assert_null(found, "%s answered twice", key);
            found = text + at + key_length + 1;
        }
        at = (size_t)(end - text) + 1;
    }
    return found;
}

void ih_expect_key(const struct ih_pdu *pdu, const char *key, const char *value)
{
    const char *answer = ih_key(pdu, key);
    cr_assert_not_null(answer, "no answer for %s", key);
    cr_assert_str_eq(answer, value, "%s=%s, expected %s", key, answer, value);
}

void ih_login_response(struct iscsi_harness *h, struct ih_pdu *pdu, uint8_t flags, uint16_t status)
{
    ih_next(h, pdu);
    cr_assert_eq(ih_opcode(pdu), IH_OP_LOGIN_RESPONSE, "opcode %#x", ih_opcode(pdu));
    uint16_t got = (uint16_t)(pdu->bhs[36] << 8 | pdu->bhs[37]);
    cr_assert_eq(got, status, "login status 0x%04x, expected 0x%04x", got, status);
    cr_assert_eq(pdu->bhs[1], flags, "login response flags %#x, expected %#x", pdu->bhs[1], flags);
    cr_assert_eq(pdu->bhs[2], 0, "Version-max");
    cr_assert_eq(pdu->bhs[3], 0, "Version-active");
    cr_assert(memcmp(pdu->bhs + 8, h->isid, 6) == 0, "ISID echoed");
    cr_assert_eq(ih_itt(pdu), h->login_itt);
    if (!h->stat_sn_known) { /* the first response starts the connection's StatSN (§11.13.4) */
        h->exp_stat_sn = ih_stat_sn(pdu);
        h->stat_sn_known = true;
    }
    ih_expect_stat_sn(h, pdu);
    /* Login requests are immediate: ExpCmdSN stays the initial CmdSN, the window is open. */
    cr_assert_eq(ih_exp_cmd_sn(pdu), h->cmd_sn);
    cr_assert_eq(ih_max_cmd_sn(pdu), h->cmd_sn + 127, "MaxCmdSN %u, ExpCmdSN %u", ih_max_cmd_sn(pdu),
                 h->cmd_sn);
}

static uint32_t number_key(const struct ih_pdu *pdu, const char *key, uint32_t fallback)
{
    const char *value = ih_key(pdu, key);
    return value ? (uint32_t)strtoul(value, NULL, 0) : fallback;
}

void ih_login_normal(struct iscsi_harness *h, const struct ih_login_params *params)
{
    char keys[1024];
    uint32_t length = ih_keys(keys, sizeof(keys), "InitiatorName=" IH_INITIATOR_IQN,
                              "TargetName=" IH_TARGET_IQN, "SessionType=Normal", "AuthMethod=None", NULL);
    ih_login(h, IH_LOGIN_T | IH_STAGES(IH_SECURITY, IH_OPERATIONAL), 0, keys, length);
    struct ih_pdu pdu;
    ih_login_response(h, &pdu, IH_LOGIN_T | IH_STAGES(IH_SECURITY, IH_OPERATIONAL), 0);
    ih_expect_key(&pdu, "AuthMethod", "None");

    length = 0;
    char pair[128];
    struct ih_login_params none = {0};
    if (!params)
        params = &none;
#define OFFER(condition, ...)                                                                      \
    do {                                                                                           \
        if (condition) {                                                                           \
            snprintf(pair, sizeof(pair), __VA_ARGS__);                                             \
            length += ih_keys(keys + length, sizeof(keys) - length, pair, NULL);                  \
        }                                                                                          \
    } while (0)
    OFFER(true, "HeaderDigest=None");
    OFFER(true, "DataDigest=None");
    OFFER(params->max_recv, "MaxRecvDataSegmentLength=%u", params->max_recv);
    OFFER(params->max_burst, "MaxBurstLength=%u", params->max_burst);
    OFFER(params->first_burst, "FirstBurstLength=%u", params->first_burst);
    OFFER(params->max_outstanding_r2t, "MaxOutstandingR2T=%u", params->max_outstanding_r2t);
    OFFER(params->immediate_data, "ImmediateData=%s", params->immediate_data);
#undef OFFER
    ih_login(h, IH_LOGIN_T | IH_STAGES(IH_OPERATIONAL, IH_FULL_FEATURE), 0, keys, length);
    ih_login_response(h, &pdu, IH_LOGIN_T | IH_STAGES(IH_OPERATIONAL, IH_FULL_FEATURE), 0);
    h->tsih = load_be16(pdu.bhs + 14);
    cr_assert_neq(h->tsih, 0, "the final login response carries the new TSIH");
    /* RFC 7143 defaults where a key was not offered (§13). */
    h->max_burst = number_key(&pdu, "MaxBurstLength", 262144);
    h->first_burst = number_key(&pdu, "FirstBurstLength", 65536);
    h->max_outstanding_r2t = number_key(&pdu, "MaxOutstandingR2T", 1);
    const char *immediate = ih_key(&pdu, "ImmediateData");
    h->immediate_data = !immediate || strcmp(immediate, "Yes") == 0;
    cr_assert(ih_negotiated(h));
    ih_expect_nothing(h);
}

void ih_login_discovery(struct iscsi_harness *h, uint32_t max_recv)
{
    char keys[256], declared[64];
    snprintf(declared, sizeof(declared), "MaxRecvDataSegmentLength=%u", max_recv);
    uint32_t length = ih_keys(keys, sizeof(keys), "InitiatorName=" IH_INITIATOR_IQN, "SessionType=Discovery",
                              declared, NULL);
    ih_login(h, IH_LOGIN_T | IH_STAGES(IH_OPERATIONAL, IH_FULL_FEATURE), 0, keys, length);
    struct ih_pdu pdu;
    ih_login_response(h, &pdu, IH_LOGIN_T | IH_STAGES(IH_OPERATIONAL, IH_FULL_FEATURE), 0);
    cr_assert(ih_negotiated(h));
    ih_expect_nothing(h);
}

void ih_scsi_response(struct iscsi_harness *h, struct ih_pdu *pdu, uint32_t itt, uint8_t status)
{
    ih_next(h, pdu);
    cr_assert_eq(ih_opcode(pdu), IH_OP_SCSI_RESPONSE, "opcode %#x, expected a SCSI Response", ih_opcode(pdu));
    cr_assert(pdu->bhs[1] & IH_F);
    cr_assert_eq(ih_itt(pdu), itt);
    cr_assert_eq(pdu->bhs[2], 0x00, "response: command completed at target");
    cr_assert_eq(pdu->bhs[3], status, "SCSI status %#x, expected %#x", pdu->bhs[3], status);
    ih_expect_stat_sn(h, pdu);
    cr_assert_eq(ih_exp_cmd_sn(pdu), h->cmd_sn);
}

void ih_clear_unit_attention(struct iscsi_harness *h, uint64_t lun)
{
    uint8_t cdb[16];
    ih_cdb_test_unit_ready(cdb);
    ih_command(h, 0x7700 + (uint32_t)lun, IH_F | IH_CMD_SIMPLE, lun, 0, cdb, NULL, 0);
    ih_wait(h);
    struct ih_pdu pdu;
    ih_scsi_response(h, &pdu, 0x7700 + (uint32_t)lun, 0x02);
    /* SenseLength, then fixed-format sense: UNIT ATTENTION, POWER ON OCCURRED (29 00). */
    cr_assert_geq(pdu.length, 2 + 14);
    cr_assert_eq(load_be16(pdu.data), pdu.length - 2);
    cr_assert_eq(pdu.data[2] & 0x7f, 0x70);
    cr_assert_eq(pdu.data[2 + 2] & 0x0f, 0x06);
    cr_assert_eq(pdu.data[2 + 12], 0x29);
    ih_command(h, 0x7800 + (uint32_t)lun, IH_F | IH_CMD_SIMPLE, lun, 0, cdb, NULL, 0);
    ih_wait(h);
    ih_scsi_response(h, &pdu, 0x7800 + (uint32_t)lun, 0x00);
    cr_assert_eq(pdu.length, 0);
}

void ih_read_disk(struct iscsi_harness *h, uint64_t offset, void *buffer, size_t length)
{
    read_file_directly(h->disk_path, offset, buffer, length);
}
