/*
 * iSCSI full feature phase (RFC 7143 §4.2, §11): SendTargets, SCSI Command
 * with Data-In / R2T / Data-Out / SCSI Response, CmdSN windowing, NOP,
 * Logout, Task Management, Reject and framing limits.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_iscsi_harness.h"

static struct iscsi_harness h;

static void setup(void) { ih_init(&h, NULL); }
static void teardown(void) { ih_fini(&h); }

TestSuite(iscsi_discovery, .fini = teardown);
TestSuite(iscsi_full_feature, .init = setup, .fini = teardown);

/* TMF functions and responses (§11.5.1, §11.6.1). */
enum { TMF_ABORT_TASK = 1, TMF_LUN_RESET = 5 };
enum { TMF_COMPLETE = 0, TMF_NO_TASK = 1 };

static uint8_t write_byte(uint64_t offset) { return (uint8_t)(offset * 7 + 3); }

/* ---- discovery ---- */

static void expect_text_response(struct ih_pdu *pdu, uint32_t itt, uint8_t flags)
{
    ih_next(&h, pdu);
    cr_assert_eq(ih_opcode(pdu), IH_OP_TEXT_RESPONSE, "opcode %#x", ih_opcode(pdu));
    cr_assert_eq(pdu->bhs[1], flags, "text response flags %#x, expected %#x", pdu->bhs[1], flags);
    cr_assert_eq(ih_itt(pdu), itt);
    ih_expect_stat_sn(&h, pdu);
    cr_assert_eq(ih_exp_cmd_sn(pdu), h.cmd_sn);
}

Test(iscsi_discovery, send_targets_all_lists_the_target_and_portals)
{
    ih_init(&h, NULL);
    ih_login_discovery(&h, 8192);
    char keys[64];
    uint32_t length = ih_keys(keys, sizeof(keys), "SendTargets=All", NULL);
    ih_text(&h, 0x21, IH_RESERVED_TAG, IH_F, keys, length);
    struct ih_pdu pdu;
    expect_text_response(&pdu, 0x21, IH_F);
    cr_assert_eq(ih_ttt(&pdu), IH_RESERVED_TAG, "a complete answer has no transfer tag");
    /* The wildcard portal is announced as the address the initiator reached (session_start.local). */
    static const char expected[] = "TargetName=" IH_TARGET_IQN "\0"
                                   "TargetAddress=" IH_PORTAL ",1\0"
                                   "TargetAddress=" IH_LOCAL ",1";
    cr_assert_eq(pdu.length, sizeof(expected));
    cr_assert(memcmp(pdu.data, expected, sizeof(expected)) == 0, "SendTargets answer: %.*s", (int)pdu.length,
              pdu.data);
    ih_expect_nothing(&h);
}

Test(iscsi_discovery, long_answers_continue_with_the_c_bit)
{
    struct ih_options options = {.extra_portals = 40};
    ih_init(&h, &options);
    ih_login_discovery(&h, 512);
    char keys[64];
    uint32_t length = ih_keys(keys, sizeof(keys), "SendTargets=All", NULL);
    ih_text(&h, 0x22, IH_RESERVED_TAG, IH_F, keys, length);

    char expected[4096];
    size_t expected_length = 0;
    expected_length += (size_t)sprintf(expected, "TargetName=" IH_TARGET_IQN) + 1;
    expected_length += (size_t)sprintf(expected + expected_length, "TargetAddress=" IH_PORTAL ",1") + 1;
    expected_length += (size_t)sprintf(expected + expected_length, "TargetAddress=" IH_LOCAL ",1") + 1;
    for (int i = 1; i <= 40; i++)
        expected_length += (size_t)sprintf(expected + expected_length, "TargetAddress=198.51.100.%d:3260,1", i) + 1;

    char got[4096];
    size_t got_length = 0;
    unsigned parts = 0;
    uint32_t ttt = IH_RESERVED_TAG;
    for (;;) {
        struct ih_pdu pdu;
        ih_next(&h, &pdu);
        cr_assert_eq(ih_opcode(&pdu), IH_OP_TEXT_RESPONSE);
        cr_assert_eq(ih_itt(&pdu), 0x22);
        ih_expect_stat_sn(&h, &pdu);
        cr_assert_leq(pdu.length, 512, "a part of %u bytes beyond the initiator's 512", pdu.length);
        cr_assert_leq(got_length + pdu.length, sizeof(got));
        memcpy(got + got_length, pdu.data, pdu.length);
        got_length += pdu.length;
        parts++;
        if (pdu.bhs[1] & IH_F) {
            cr_assert_not(pdu.bhs[1] & IH_TEXT_C, "C and F together");
            cr_assert_eq(ih_ttt(&pdu), IH_RESERVED_TAG);
            break;
        }
        /* §11.11.2: C set, F clear, a transfer tag the initiator echoes to get the rest. */
        cr_assert(pdu.bhs[1] & IH_TEXT_C);
        cr_assert_eq(pdu.length, 512);
        cr_assert_neq(ih_ttt(&pdu), IH_RESERVED_TAG);
        if (ttt != IH_RESERVED_TAG)
            cr_assert_eq(ih_ttt(&pdu), ttt, "one transfer tag for the whole answer");
        ttt = ih_ttt(&pdu);
        ih_expect_nothing(&h);
        ih_text(&h, 0x22, ttt, IH_F, NULL, 0);
    }
    cr_assert_geq(parts, 3);
    cr_assert_eq(got_length, expected_length);
    cr_assert(memcmp(got, expected, expected_length) == 0);
    ih_expect_nothing(&h);
}

Test(iscsi_discovery, normal_session_send_targets_names_its_own_target)
{
    ih_init(&h, NULL);
    ih_login_normal(&h, NULL);
    char keys[64];
    uint32_t length = ih_keys(keys, sizeof(keys), "SendTargets=", NULL);
    ih_text(&h, 0x23, IH_RESERVED_TAG, IH_F, keys, length);
    struct ih_pdu pdu;
    expect_text_response(&pdu, 0x23, IH_F);
    ih_expect_key(&pdu, "TargetName", IH_TARGET_IQN);
    /* "All" is for discovery sessions only (Appendix C). */
    length = ih_keys(keys, sizeof(keys), "SendTargets=All", NULL);
    ih_text(&h, 0x24, IH_RESERVED_TAG, IH_F, keys, length);
    expect_text_response(&pdu, 0x24, IH_F);
    cr_assert_null(ih_key(&pdu, "TargetName"));
    ih_expect_key(&pdu, "SendTargets", "Reject");
}

/* ---- SCSI commands ---- */

/* Data-In of one PDU: checks the fields every Data-In carries. */
static void next_data_in(struct ih_pdu *pdu, uint32_t itt, uint32_t data_sn, uint32_t offset)
{
    ih_next(&h, pdu);
    cr_assert_eq(ih_opcode(pdu), IH_OP_DATA_IN, "opcode %#x, expected Data-In", ih_opcode(pdu));
    cr_assert_eq(ih_itt(pdu), itt);
    cr_assert_eq(ih_ttt(pdu), IH_RESERVED_TAG);
    cr_assert_eq(load_be32(pdu->bhs + 36), data_sn, "DataSN %u, expected %u", load_be32(pdu->bhs + 36), data_sn);
    cr_assert_eq(load_be32(pdu->bhs + 40), offset, "Buffer Offset %u, expected %u", load_be32(pdu->bhs + 40),
                 offset);
    cr_assert_eq(ih_exp_cmd_sn(pdu), h.cmd_sn);
}

Test(iscsi_full_feature, inquiry_in_one_data_in_with_status_and_underflow)
{
    ih_login_normal(&h, NULL);
    uint8_t cdb[16];
    ih_cdb_inquiry(cdb, 255);
    ih_command(&h, 0x31, IH_F | IH_CMD_R | IH_CMD_SIMPLE, 0, 255, cdb, NULL, 0);
    ih_wait(&h);
    struct ih_pdu pdu;
    next_data_in(&pdu, 0x31, 0, 0);
    /* Status collapsed into the only Data-In (§11.7.4): F and S, with the underflow residual. */
    cr_assert_eq(pdu.bhs[1], IH_F | IH_DATA_S | IH_DATA_U, "flags %#x", pdu.bhs[1]);
    cr_assert_eq(pdu.bhs[3], 0x00, "GOOD");
    ih_expect_stat_sn(&h, &pdu);
    cr_assert_geq(pdu.length, 36);
    cr_assert_lt(pdu.length, 255);
    cr_assert_eq(load_be32(pdu.bhs + 44), 255 - pdu.length, "residual %u", load_be32(pdu.bhs + 44));
    cr_assert_eq(pdu.data[0], 0x00, "a connected direct-access block device");
    cr_assert_eq(pdu.data[4] + 5u, pdu.length, "additional length");
    cr_assert(memcmp(pdu.data + 8, "LUNA    ", 8) == 0);
    ih_expect_nothing(&h);
}

Test(iscsi_full_feature, first_command_gets_the_power_on_unit_attention)
{
    ih_login_normal(&h, NULL);
    ih_clear_unit_attention(&h, 0); /* asserts CHECK CONDITION with 06/29/00, then GOOD */
    ih_clear_unit_attention(&h, 1); /* each LUN keeps its own */
    ih_expect_nothing(&h);
}

/* READ(10) of 1 MiB from LUN 1: Data-In at most MaxRecvDataSegmentLength, F at each burst's end. */
Test(iscsi_full_feature, read_split_by_max_recv_and_max_burst)
{
    struct ih_login_params params = {.max_recv = 40960, .max_burst = 131072};
    ih_login_normal(&h, &params);
    cr_assert_eq(h.max_burst, 131072);
    ih_clear_unit_attention(&h, 1);
    const uint32_t total = 1u << 20;
    uint8_t cdb[16];
    ih_cdb_read10(cdb, 0, (uint16_t)(total / IH_BLOCK));
    ih_command(&h, 0x40, IH_F | IH_CMD_R | IH_CMD_SIMPLE, 1, total, cdb, NULL, 0);
    ih_wait(&h);
    uint32_t offset = 0, data_sn = 0;
    while (offset < total) {
        struct ih_pdu pdu;
        next_data_in(&pdu, 0x40, data_sn, offset);
        uint32_t burst_end = (offset / 131072 + 1) * 131072;
        cr_assert_gt(pdu.length, 0);
        cr_assert_leq(pdu.length, 40960, "a %u-byte Data-In", pdu.length);
        cr_assert_leq(offset + pdu.length, burst_end, "a Data-In across a burst boundary");
        bool last = offset + pdu.length == total;
        bool sequence_end = offset + pdu.length == burst_end;
        cr_assert_eq((pdu.bhs[1] & IH_F) != 0, sequence_end || last, "F at %u+%u", offset, pdu.length);
        cr_assert_eq((pdu.bhs[1] & IH_DATA_S) != 0, last, "S only on the last");
        if (last) {
            cr_assert_eq(pdu.bhs[1] & (IH_DATA_U | IH_DATA_O), 0, "no residual");
            cr_assert_eq(pdu.bhs[3], 0x00);
            ih_expect_stat_sn(&h, &pdu);
        }
        for (uint32_t i = 0; i < pdu.length; i++)
            if (pdu.data[i] != session_pattern_byte(offset + i))
                cr_assert_fail("byte %u differs", offset + i);
        offset += pdu.length;
        data_sn++;
    }
    cr_assert_eq(data_sn, 32, "3 x 40 KiB + 8 KiB per 128 KiB burst");
    ih_expect_nothing(&h);
}

Test(iscsi_full_feature, read_longer_than_expected_reports_overflow)
{
    ih_login_normal(&h, NULL);
    ih_clear_unit_attention(&h, 1);
    uint8_t cdb[16];
    ih_cdb_read10(cdb, 2, 8);
    ih_command(&h, 0x41, IH_F | IH_CMD_R | IH_CMD_SIMPLE, 1, 1024, cdb, NULL, 0);
    ih_wait(&h);
    struct ih_pdu pdu;
    next_data_in(&pdu, 0x41, 0, 0);
    cr_assert_eq(pdu.bhs[1], IH_F | IH_DATA_S | IH_DATA_O, "flags %#x", pdu.bhs[1]);
    cr_assert_eq(pdu.length, 1024);
    cr_assert_eq(load_be32(pdu.bhs + 44), 4096 - 1024);
    ih_expect_stat_sn(&h, &pdu);
    for (uint32_t i = 0; i < pdu.length; i++)
        cr_assert_eq(pdu.data[i], session_pattern_byte(2 * IH_BLOCK + i));
}

/* An R2T: its fields, returned for the Data-Out that answers it. */
static void expect_r2t(struct ih_pdu *pdu, uint32_t itt, uint64_t lun, uint32_t r2t_sn, uint32_t offset,
                       uint32_t length)
{
    ih_next(&h, pdu);
    cr_assert_eq(ih_opcode(pdu), IH_OP_R2T, "opcode %#x, expected R2T", ih_opcode(pdu));
    cr_assert_eq(pdu->bhs[1], IH_F);
    cr_assert_eq(pdu->bhs[9], lun);
    cr_assert_eq(ih_itt(pdu), itt);
    cr_assert_neq(ih_ttt(pdu), IH_RESERVED_TAG);
    cr_assert_eq(ih_stat_sn(pdu), h.exp_stat_sn, "an R2T carries the next StatSN without taking it");
    cr_assert_eq(ih_exp_cmd_sn(pdu), h.cmd_sn);
    cr_assert_eq(load_be32(pdu->bhs + 36), r2t_sn, "R2TSN %u, expected %u", load_be32(pdu->bhs + 36), r2t_sn);
    cr_assert_eq(load_be32(pdu->bhs + 40), offset, "R2T offset %u, expected %u", load_be32(pdu->bhs + 40), offset);
    cr_assert_eq(load_be32(pdu->bhs + 44), length, "R2T length %u, expected %u", load_be32(pdu->bhs + 44),
                 length);
}

/* Answer an R2T with Data-Out PDUs of at most piece bytes taken from data. */
static void answer_r2t(uint32_t itt, uint32_t ttt, uint32_t offset, uint32_t length, const uint8_t *data,
                       uint32_t piece)
{
    for (uint32_t sent = 0, data_sn = 0; sent < length; data_sn++) {
        uint32_t n = length - sent < piece ? length - sent : piece;
        ih_data_out(&h, itt, ttt, 0, data_sn, offset + sent, data + offset + sent, n, sent + n == length);
        sent += n;
    }
}

Test(iscsi_full_feature, write_with_immediate_data_then_r2ts_lands_in_the_file)
{
    struct ih_login_params params = {
        .max_burst = 65536, .first_burst = 16384, .immediate_data = "Yes", .max_outstanding_r2t = 2};
    ih_login_normal(&h, &params);
    cr_assert_eq(h.first_burst, 16384);
    cr_assert_eq(h.max_outstanding_r2t, 2);
    ih_clear_unit_attention(&h, 0);
    const uint32_t total = 256 * 1024, lba = 8;
    uint8_t *data = malloc(total);
    cr_assert_not_null(data);
    for (uint32_t i = 0; i < total; i++)
        data[i] = write_byte(i);
    uint8_t cdb[16];
    ih_cdb_write10(cdb, lba, (uint16_t)(total / IH_BLOCK));
    ih_command(&h, 0x50, IH_F | IH_CMD_W | IH_CMD_SIMPLE, 0, total, cdb, data, 16384);

    /* InitialR2T=Yes: R2Ts ask for what follows the immediate data, MaxBurstLength each, two at once. */
    struct ih_pdu r2t[4];
    expect_r2t(&r2t[0], 0x50, 0, 0, 16384, 65536);
    expect_r2t(&r2t[1], 0x50, 0, 1, 81920, 65536);
    uint32_t ttt = ih_ttt(&r2t[0]);
    cr_assert_eq(ih_ttt(&r2t[1]), ttt);
    ih_expect_nothing(&h);

    answer_r2t(0x50, ttt, 16384, 65536, data, 16384);
    expect_r2t(&r2t[2], 0x50, 0, 2, 147456, 65536);
    ih_expect_nothing(&h);
    answer_r2t(0x50, ttt, 81920, 65536, data, 8192);
    expect_r2t(&r2t[3], 0x50, 0, 3, 212992, 49152);
    ih_expect_nothing(&h);
    answer_r2t(0x50, ttt, 147456, 65536, data, 65536);
    ih_expect_nothing(&h);
    answer_r2t(0x50, ttt, 212992, 49152, data, 12288);
    ih_wait(&h);

    struct ih_pdu pdu;
    ih_scsi_response(&h, &pdu, 0x50, 0x00);
    cr_assert_eq(pdu.bhs[1] & (IH_RESP_U | IH_RESP_O), 0, "no residual");
    cr_assert_eq(load_be32(pdu.bhs + 36), 4, "ExpDataSN counts the R2Ts");
    cr_assert_eq(pdu.length, 0);
    ih_expect_nothing(&h);

    uint8_t *file = malloc(total + 2 * IH_BLOCK);
    cr_assert_not_null(file);
    ih_read_disk(&h, (lba - 1) * IH_BLOCK, file, total + 2 * IH_BLOCK);
    for (uint32_t i = 0; i < IH_BLOCK; i++)
        cr_assert_eq(file[i], 0, "the block before is untouched");
    cr_assert(memcmp(file + IH_BLOCK, data, total) == 0, "the written data is in the file");
    for (uint32_t i = 0; i < IH_BLOCK; i++)
        cr_assert_eq(file[IH_BLOCK + total + i], 0, "the block after is untouched");
    free(file);
    free(data);
}

Test(iscsi_full_feature, write_entirely_immediate_needs_no_r2t)
{
    struct ih_login_params params = {.immediate_data = "Yes"};
    ih_login_normal(&h, &params);
    ih_clear_unit_attention(&h, 0);
    uint8_t data[4096], cdb[16];
    for (uint32_t i = 0; i < sizeof(data); i++)
        data[i] = write_byte(i);
    ih_cdb_write10(cdb, 0, 8);
    ih_command(&h, 0x51, IH_F | IH_CMD_W | IH_CMD_SIMPLE, 0, sizeof(data), cdb, data, sizeof(data));
    ih_wait(&h);
    struct ih_pdu pdu;
    ih_scsi_response(&h, &pdu, 0x51, 0x00);
    cr_assert_eq(load_be32(pdu.bhs + 36), 0, "no R2T sent");
    uint8_t file[4096];
    ih_read_disk(&h, 0, file, sizeof(file));
    cr_assert(memcmp(file, data, sizeof(data)) == 0);
}

Test(iscsi_full_feature, write_to_the_read_only_lun_is_data_protect)
{
    struct ih_login_params params = {.immediate_data = "Yes"};
    ih_login_normal(&h, &params);
    ih_clear_unit_attention(&h, 1);
    uint8_t data[512] = {1}, cdb[16];
    ih_cdb_write10(cdb, 0, 1);
    ih_command(&h, 0x52, IH_F | IH_CMD_W | IH_CMD_SIMPLE, 1, sizeof(data), cdb, data, sizeof(data));
    ih_wait(&h);
    struct ih_pdu pdu;
    ih_scsi_response(&h, &pdu, 0x52, 0x02);
    cr_assert_geq(pdu.length, 2 + 14);
    cr_assert_eq(pdu.data[2 + 2] & 0x0f, 0x07, "DATA PROTECT");
    cr_assert_eq(pdu.data[2 + 12], 0x27, "WRITE PROTECTED");
}

Test(iscsi_full_feature, data_out_for_an_unknown_task_is_dropped)
{
    ih_login_normal(&h, NULL);
    uint8_t data[512];
    memset(data, 0xab, sizeof(data));
    ih_data_out(&h, 0x555, 0x10, 0, 0, 0, data, sizeof(data), true);
    ih_wait(&h);
    ih_expect_nothing(&h);
    cr_assert_eq(ih_status(&h), SESSION_ACTIVE);
    cr_assert(ih_wants_input(&h));
    ih_nop_out(&h, 0x56, true, NULL, 0); /* still in step */
    struct ih_pdu pdu;
    ih_next(&h, &pdu);
    cr_assert_eq(ih_opcode(&pdu), IH_OP_NOP_IN);
    ih_expect_stat_sn(&h, &pdu);
}

Test(iscsi_full_feature, commands_outside_the_cmd_sn_window_are_ignored)
{
    struct ih_login_params params = {.immediate_data = "Yes"};
    ih_login_normal(&h, &params);
    uint8_t cdb[16], data[512] = {0};
    ih_cdb_test_unit_ready(cdb);
    ih_command_sn(&h, 0x60, IH_F | IH_CMD_SIMPLE, 0, 0, cdb, h.cmd_sn + 1, NULL, 0); /* ahead */
    ih_command_sn(&h, 0x61, IH_F | IH_CMD_SIMPLE, 0, 0, cdb, h.cmd_sn - 1, NULL, 0); /* already seen */
    ih_cdb_write10(cdb, 0, 1);
    /* Its immediate data must be skipped, not taken for the next header. */
    ih_command_sn(&h, 0x62, IH_F | IH_CMD_W | IH_CMD_SIMPLE, 0, 512, cdb, h.cmd_sn + 100, data, sizeof(data));
    ih_wait(&h);
    ih_expect_nothing(&h);
    /* The expected CmdSN still opens the window: the unit attention shows this is the first command run. */
    ih_clear_unit_attention(&h, 0);
}

Test(iscsi_full_feature, nop_out_ping_is_echoed)
{
    ih_login_normal(&h, NULL);
    static const char ping[] = "thirteen byte"; /* 13 bytes: padded to 16 */
    uint8_t bhs[IH_BHS] = {IH_OP_NOP_OUT, IH_F};
    ih_lun_field(bhs + 8, 1);
    store_be32(bhs + 16, 0x70);
    store_be32(bhs + 20, IH_RESERVED_TAG);
    store_be32(bhs + 24, h.cmd_sn++);
    ih_send(&h, bhs, ping, 13);
    struct ih_pdu pdu;
    ih_next(&h, &pdu);
    cr_assert_eq(ih_opcode(&pdu), IH_OP_NOP_IN);
    cr_assert_eq(pdu.bhs[1], IH_F);
    cr_assert_eq(pdu.bhs[9], 1, "LUN echoed");
    cr_assert_eq(ih_itt(&pdu), 0x70);
    cr_assert_eq(ih_ttt(&pdu), IH_RESERVED_TAG);
    ih_expect_stat_sn(&h, &pdu);
    cr_assert_eq(ih_exp_cmd_sn(&pdu), h.cmd_sn, "the ping took its CmdSN");
    cr_assert_eq(pdu.length, 13);
    cr_assert(memcmp(pdu.data, ping, 13) == 0);
    /* A NOP-Out with the reserved tag wants no answer (§11.18.3). */
    ih_nop_out(&h, IH_RESERVED_TAG, true, NULL, 0);
    ih_expect_nothing(&h);
}

Test(iscsi_full_feature, logout_is_answered_and_the_session_drains)
{
    ih_login_normal(&h, NULL);
    ih_logout(&h, 0x80, 0); /* close the session */
    struct ih_pdu pdu;
    ih_next(&h, &pdu);
    cr_assert_eq(ih_opcode(&pdu), IH_OP_LOGOUT_RESPONSE);
    cr_assert_eq(pdu.bhs[1], IH_F);
    cr_assert_eq(pdu.bhs[2], 0, "connection or session closed successfully");
    cr_assert_eq(ih_itt(&pdu), 0x80);
    ih_expect_stat_sn(&h, &pdu);
    cr_assert_eq(ih_exp_cmd_sn(&pdu), h.cmd_sn);
    cr_assert_eq(pdu.length, 0);
    cr_assert_eq(ih_status(&h), SESSION_DRAINING);
    cr_assert_not(ih_wants_input(&h));
    cr_assert_eq(ih_inflight(&h), 0);
    /* Nothing after the logout is taken. */
    uint8_t bhs[IH_BHS] = {IH_OP_NOP_OUT | IH_IMMEDIATE, IH_F};
    cr_assert_eq(ih_feed_some(&h, bhs, sizeof(bhs)), 0);
    ih_expect_nothing(&h);
}

Test(iscsi_full_feature, logout_for_recovery_is_not_supported)
{
    ih_login_normal(&h, NULL);
    ih_logout(&h, 0x81, 2); /* remove the connection for recovery: ErrorRecoveryLevel is 0 */
    struct ih_pdu pdu;
    ih_next(&h, &pdu);
    cr_assert_eq(ih_opcode(&pdu), IH_OP_LOGOUT_RESPONSE);
    cr_assert_eq(pdu.bhs[2], 2, "connection recovery is not supported");
    ih_expect_stat_sn(&h, &pdu);
    cr_assert_eq(ih_status(&h), SESSION_ACTIVE);
}

static void expect_tmf_response(uint32_t itt, uint8_t response)
{
    struct ih_pdu pdu;
    ih_next(&h, &pdu);
    cr_assert_eq(ih_opcode(&pdu), IH_OP_TMF_RESPONSE, "opcode %#x, expected a TMF response", ih_opcode(&pdu));
    cr_assert_eq(pdu.bhs[1], IH_F);
    cr_assert_eq(pdu.bhs[2], response, "TMF response %u, expected %u", pdu.bhs[2], response);
    cr_assert_eq(ih_itt(&pdu), itt);
    ih_expect_stat_sn(&h, &pdu);
}

Test(iscsi_full_feature, abort_task_waiting_for_data_out)
{
    ih_login_normal(&h, NULL);
    ih_clear_unit_attention(&h, 0);
    uint8_t cdb[16], data[4096];
    memset(data, 0x5a, sizeof(data));
    ih_cdb_write10(cdb, 0, 8);
    uint32_t cmd_sn = h.cmd_sn;
    ih_command(&h, 0x90, IH_F | IH_CMD_W | IH_CMD_SIMPLE, 0, sizeof(data), cdb, NULL, 0);
    struct ih_pdu r2t;
    expect_r2t(&r2t, 0x90, 0, 0, 0, sizeof(data));
    ih_tmf(&h, 0x91, TMF_ABORT_TASK, 0, 0x90, cmd_sn);
    expect_tmf_response(0x91, TMF_COMPLETE);
    /* The aborted task's data is dropped (§4.2.3.4), not answered, and never reaches the disk. */
    ih_data_out(&h, 0x90, ih_ttt(&r2t), 0, 0, 0, data, sizeof(data), true);
    ih_wait(&h);
    ih_expect_nothing(&h);
    uint8_t file[4096];
    ih_read_disk(&h, 0, file, sizeof(file));
    for (size_t i = 0; i < sizeof(file); i++)
        cr_assert_eq(file[i], 0);
    ih_tmf(&h, 0x92, TMF_ABORT_TASK, 0, 0x90, cmd_sn);
    expect_tmf_response(0x92, TMF_NO_TASK);
}

Test(iscsi_full_feature, abort_task_of_an_executing_read_answers_after_it)
{
    ih_login_normal(&h, NULL);
    ih_clear_unit_attention(&h, 1);
    uint8_t cdb[16];
    ih_cdb_read10(cdb, 0, 64);
    uint32_t cmd_sn = h.cmd_sn;
    ih_command(&h, 0x93, IH_F | IH_CMD_R | IH_CMD_SIMPLE, 1, 64 * IH_BLOCK, cdb, NULL, 0);
    ih_tmf(&h, 0x94, TMF_ABORT_TASK, 1, 0x93, cmd_sn);
    ih_expect_nothing(&h); /* the read is on the disk: the answer waits for it */
    ih_wait(&h);
    expect_tmf_response(0x94, TMF_COMPLETE);
    ih_expect_nothing(&h); /* and the aborted read returns no data and no status */
}

Test(iscsi_full_feature, lun_reset_drops_tasks_waiting_for_data)
{
    ih_login_normal(&h, NULL);
    ih_clear_unit_attention(&h, 0);
    uint8_t cdb[16], data[512] = {7};
    ih_cdb_write10(cdb, 0, 1);
    ih_command(&h, 0x95, IH_F | IH_CMD_W | IH_CMD_SIMPLE, 0, sizeof(data), cdb, NULL, 0);
    struct ih_pdu r2t;
    expect_r2t(&r2t, 0x95, 0, 0, 0, sizeof(data));
    ih_tmf(&h, 0x96, TMF_LUN_RESET, 0, IH_RESERVED_TAG, 0);
    expect_tmf_response(0x96, TMF_COMPLETE);
    ih_data_out(&h, 0x95, ih_ttt(&r2t), 0, 0, 0, data, sizeof(data), true);
    ih_wait(&h);
    ih_expect_nothing(&h);
}

static void expect_reject(const uint8_t *sent, uint8_t reason)
{
    struct ih_pdu pdu;
    ih_next(&h, &pdu);
    cr_assert_eq(ih_opcode(&pdu), IH_OP_REJECT, "opcode %#x, expected Reject", ih_opcode(&pdu));
    cr_assert_eq(pdu.bhs[1], IH_F);
    cr_assert_eq(pdu.bhs[2], reason, "reason %#x, expected %#x", pdu.bhs[2], reason);
    cr_assert_eq(ih_itt(&pdu), IH_RESERVED_TAG);
    ih_expect_stat_sn(&h, &pdu);
    cr_assert_eq(pdu.length, IH_BHS, "the rejected header is the data segment (§11.17.3)");
    cr_assert(memcmp(pdu.data, sent, IH_BHS) == 0, "the header echoed as sent");
}

Test(iscsi_full_feature, unknown_opcodes_are_rejected_with_the_header_echoed)
{
    ih_login_normal(&h, NULL);
    uint8_t bhs[IH_BHS] = {0x1c | IH_IMMEDIATE, IH_F, 0x12, 0x34}; /* vendor specific */
    store_be32(bhs + 16, 0x1234);
    for (unsigned i = 32; i < IH_BHS; i++)
        bhs[i] = (uint8_t)i;
    ih_send(&h, bhs, "abcdefg", 7); /* its data segment is skipped with the padding */
    expect_reject(bhs, 0x05);
    uint8_t snack[IH_BHS] = {IH_OP_SNACK, IH_F};
    store_be32(snack + 16, IH_RESERVED_TAG);
    ih_send(&h, snack, NULL, 0);
    expect_reject(snack, 0x05);
    uint8_t login[IH_BHS] = {IH_OP_LOGIN | IH_IMMEDIATE, IH_LOGIN_T | IH_STAGES(1, 3)};
    ih_send(&h, login, NULL, 0);
    expect_reject(login, 0x04); /* a login in the full feature phase is a protocol error */
    cr_assert_eq(ih_status(&h), SESSION_ACTIVE);
    ih_expect_nothing(&h);
}

Test(iscsi_full_feature, data_segment_beyond_the_target_limit_closes)
{
    ih_login_normal(&h, NULL);
    uint8_t bhs[IH_BHS] = {IH_OP_NOP_OUT | IH_IMMEDIATE, IH_F};
    store_be32(bhs + 16, 1);
    store_be24(bhs + 5, IH_TARGET_MAX_RECV + 1); /* beyond the MaxRecvDataSegmentLength it declared */
    ih_feed(&h, bhs, sizeof(bhs));
    cr_assert_eq(ih_status(&h), SESSION_CLOSED);
    cr_assert_not(ih_wants_input(&h));
    ih_expect_nothing(&h);
}

Test(iscsi_full_feature, immediate_data_beyond_first_burst_closes)
{
    struct ih_login_params params = {.first_burst = 4096, .immediate_data = "Yes"};
    ih_login_normal(&h, &params);
    uint8_t cdb[16];
    ih_cdb_write10(cdb, 0, 16);
    uint8_t bhs[IH_BHS] = {IH_OP_SCSI_COMMAND, IH_F | IH_CMD_W};
    store_be32(bhs + 16, 0xa0);
    store_be32(bhs + 20, 8192);
    store_be32(bhs + 24, h.cmd_sn);
    memcpy(bhs + 32, cdb, 16);
    store_be24(bhs + 5, 8192); /* 8 KiB of immediate data, FirstBurstLength 4096 */
    ih_feed(&h, bhs, sizeof(bhs));
    cr_assert_eq(ih_status(&h), SESSION_CLOSED);
}

/* ---- regressions: inputs that once broke the target ---- */

TestSuite(iscsi_session_regressions, .init = setup, .fini = teardown);

/*
 * Data-Out is not checked against the R2T it answers: a repeated burst
 * counts twice, so the write runs once received >= EDTL with the rest of
 * the buffer never sent (malloc'd, uninitialised heap bytes go to disk).
 * §11.7.5: data outside the solicited range is a protocol error; the
 * command must not complete before all of its data arrived.
 */
Test(iscsi_session_regressions, repeated_data_out_does_not_complete_the_write)
{
    struct ih_login_params params = {.max_burst = 4096};
    ih_login_normal(&h, &params);
    ih_clear_unit_attention(&h, 0);
    uint8_t cdb[16], data[8192];
    for (uint32_t i = 0; i < sizeof(data); i++)
        data[i] = write_byte(i);
    ih_cdb_write10(cdb, 0, 16);
    ih_command(&h, 0xb0, IH_F | IH_CMD_W | IH_CMD_SIMPLE, 0, sizeof(data), cdb, NULL, 0);
    struct ih_pdu r2t;
    expect_r2t(&r2t, 0xb0, 0, 0, 0, 4096);
    ih_data_out(&h, 0xb0, ih_ttt(&r2t), 0, 0, 0, data, 4096, true);
    expect_r2t(&r2t, 0xb0, 0, 1, 4096, 4096);
    ih_data_out(&h, 0xb0, ih_ttt(&r2t), 0, 0, 0, data, 4096, true); /* the first burst again */
    ih_wait(&h);
    struct ih_pdu pdu;
    while (ih_output_left(&h)) {
        ih_next(&h, &pdu);
        cr_assert_neq(ih_opcode(&pdu), IH_OP_SCSI_RESPONSE,
                      "the write completed with bytes 4096-8191 never sent (status %#x)", pdu.bhs[3]);
    }
}

/*
 * The same hole, worse: Data-Out totalling more than the Expected Data
 * Transfer Length runs the task with data_out_length (bytes received)
 * beyond its EDTL-sized buffer, and a CDB asking for more blocks than the
 * EDTL makes the SCSI core write received bytes from it: a heap over-read
 * whose bytes land on the disk.  (The kernel does the reading, in pwritev2
 * or io_uring, so ASan does not see it; the disk contents show it.)
 */
Test(iscsi_session_regressions, data_out_beyond_the_expected_length_is_not_written)
{
    ih_login_normal(&h, NULL);
    ih_clear_unit_attention(&h, 0);
    uint8_t cdb[16], data[4096];
    memset(data, 0x11, sizeof(data));
    ih_cdb_write10(cdb, 0, 16); /* 8 KiB in the CDB, 4 KiB expected */
    ih_command(&h, 0xb1, IH_F | IH_CMD_W | IH_CMD_SIMPLE, 0, sizeof(data), cdb, NULL, 0);
    struct ih_pdu r2t;
    expect_r2t(&r2t, 0xb1, 0, 0, 0, 4096);
    ih_data_out(&h, 0xb1, ih_ttt(&r2t), 0, 0, 0, data, 2048, false);
    ih_data_out(&h, 0xb1, ih_ttt(&r2t), 0, 1, 0, data, 4096, true); /* 6 KiB received for 4 KiB */
    ih_wait(&h);
    uint8_t file[8192];
    ih_read_disk(&h, 0, file, sizeof(file));
    for (size_t i = 4096; i < sizeof(file); i++)
        cr_assert_eq(file[i], 0, "byte %zu was never sent but is %#x on the disk", i, file[i]);
    struct ih_pdu pdu;
    while (ih_output_left(&h)) {
        ih_next(&h, &pdu);
        cr_assert_neq(ih_opcode(&pdu), IH_OP_SCSI_RESPONSE, "the write ran with 6 KiB counted in a 4 KiB buffer");
    }
}

/*
 * MaxCmdSN closes the window once 128 commands are alive, but
 * iscsi_accept_cmd_sn only compares CmdSN with ExpCmdSN: the 129th command
 * is accepted (and allocates its EDTL), so the queue depth the window
 * advertises is not enforced (§4.2.2.1: outside [ExpCmdSN, MaxCmdSN] the
 * command must be ignored).
 */
Test(iscsi_session_regressions, a_command_beyond_max_cmd_sn_is_ignored)
{
    ih_login_normal(&h, NULL);
    ih_clear_unit_attention(&h, 0);
    uint8_t cdb[16];
    ih_cdb_write10(cdb, 0, 1);
    uint32_t max_cmd_sn = 0;
    for (uint32_t i = 0; i < 128; i++) {
        ih_command(&h, 0x1000 + i, IH_F | IH_CMD_W | IH_CMD_SIMPLE, 0, 512, cdb, NULL, 0);
        struct ih_pdu r2t;
        expect_r2t(&r2t, 0x1000 + i, 0, 0, 0, 512);
        max_cmd_sn = ih_max_cmd_sn(&r2t);
    }
    cr_assert_eq(max_cmd_sn, h.cmd_sn - 1, "the window is closed: MaxCmdSN = ExpCmdSN - 1");
    ih_command(&h, 0x2000, IH_F | IH_CMD_W | IH_CMD_SIMPLE, 0, 512, cdb, NULL, 0);
    ih_expect_nothing(&h);
}

/*
 * NOP-In echoes ping data longer than the initiator's
 * MaxRecvDataSegmentLength (here the default 8192): §11.18.5 limits the
 * reflected data to it.
 */
Test(iscsi_session_regressions, nop_in_echo_respects_the_initiator_max_recv)
{
    ih_login_normal(&h, NULL); /* MaxRecvDataSegmentLength not offered: 8192 */
    uint8_t *ping = calloc(1, 12000);
    cr_assert_not_null(ping);
    ih_nop_out(&h, 0x71, true, ping, 12000);
    free(ping);
    struct ih_pdu pdu;
    ih_next(&h, &pdu);
    cr_assert_eq(ih_opcode(&pdu), IH_OP_NOP_IN);
    cr_assert_leq(pdu.length, 8192, "a %u-byte NOP-In to an initiator that takes 8192", pdu.length);
}

/*
 * A discovery session runs SCSI commands (against no LUNs).  RFC 3720
 * §3.3 / RFC 7143 §4.3: a discovery session accepts only Text
 * (SendTargets) and Logout; everything else must be rejected.
 */
Test(iscsi_session_regressions, discovery_session_rejects_scsi_commands)
{
    ih_login_discovery(&h, 8192);
    uint8_t cdb[16];
    ih_cdb_inquiry(cdb, 36);
    ih_command(&h, 0xc0, IH_F | IH_CMD_R | IH_CMD_SIMPLE, 0, 36, cdb, NULL, 0);
    ih_wait(&h);
    struct ih_pdu pdu;
    ih_next(&h, &pdu);
    cr_assert_eq(ih_opcode(&pdu), IH_OP_REJECT, "opcode %#x: the command ran", ih_opcode(&pdu));
}

/*
 * Logout while a command executes: luna answers the Logout at once and the
 * command's Data-In and status follow it.  §11.14: on "close the session"
 * the target terminates pending commands, then sends the Logout Response;
 * "for the terminated commands, no additional responses should be
 * expected" (libiscsi and open-iscsi close on the Logout Response).
 */
Test(iscsi_session_regressions, nothing_follows_the_logout_response)
{
    ih_login_normal(&h, NULL);
    ih_clear_unit_attention(&h, 1);
    uint8_t cdb[16];
    ih_cdb_read10(cdb, 0, 64);
    ih_command(&h, 0xd0, IH_F | IH_CMD_R | IH_CMD_SIMPLE, 1, 64 * IH_BLOCK, cdb, NULL, 0);
    ih_logout(&h, 0xd1, 0);
    ih_wait(&h);
    bool logged_out = false;
    while (ih_output_left(&h)) {
        struct ih_pdu pdu;
        ih_next(&h, &pdu);
        cr_assert_not(logged_out, "opcode %#x after the Logout Response", ih_opcode(&pdu));
        logged_out = ih_opcode(&pdu) == IH_OP_LOGOUT_RESPONSE;
    }
    cr_assert(logged_out);
}
