/*
 * iSCSI login phase (RFC 7143 §6.3, §11.12-11.13, §13): stage transitions,
 * the negotiated answers, TSIH and sequence numbers, keys continued over
 * PDUs, discovery sessions and every refusal's status class and detail.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "test_iscsi_harness.h"

static struct iscsi_harness h;

static void setup(void) { ih_init(&h, NULL); }
static void teardown(void) { ih_fini(&h); }

TestSuite(iscsi_login, .init = setup, .fini = teardown);

#define SECURITY_TO_OPERATIONAL (IH_LOGIN_T | IH_STAGES(IH_SECURITY, IH_OPERATIONAL))
#define OPERATIONAL_TO_FULL (IH_LOGIN_T | IH_STAGES(IH_OPERATIONAL, IH_FULL_FEATURE))

#define INITIATOR "InitiatorName=" IH_INITIATOR_IQN
#define TARGET "TargetName=" IH_TARGET_IQN

static void login(uint8_t flags, const char *keys, uint32_t length) { ih_login(&h, flags, 0, keys, length); }

/* One login PDU offering the "key=value" strings listed (NULL-terminated): what most tests send. */
static void login_offering(uint8_t flags, ...) __attribute__((sentinel));
static void login_offering(uint8_t flags, ...)
{
    char keys[1024];
    uint32_t length = 0;
    va_list pairs;
    va_start(pairs, flags);
    for (const char *pair; (pair = va_arg(pairs, const char *)) != NULL;)
        length += ih_keys(keys + length, sizeof(keys) - length, pair, NULL);
    va_end(pairs);
    login(flags, keys, length);
}

/* A refused login: the status, no keys, no T bit, no TSIH; the connection closes once the answer is written. */
static void expect_refused(uint8_t csg, uint16_t status)
{
    struct ih_pdu pdu;
    ih_login_response(&h, &pdu, IH_STAGES(csg, 0), status);
    cr_assert_eq(pdu.length, 0);
    cr_assert_eq(load_be16(pdu.bhs + 14), 0, "no TSIH in a refusal");
    cr_assert_eq(ih_status(&h), SESSION_DRAINING);
    cr_assert_not(ih_wants_input(&h));
    cr_assert_not(ih_negotiated(&h));
    ih_expect_nothing(&h);
}

Test(iscsi_login, security_operational_full_feature_with_negotiated_answers)
{
    login_offering(SECURITY_TO_OPERATIONAL, INITIATOR, "InitiatorAlias=test", TARGET, "SessionType=Normal",
                   "AuthMethod=None", NULL);
    struct ih_pdu first;
    ih_login_response(&h, &first, SECURITY_TO_OPERATIONAL, 0);
    ih_expect_key(&first, "AuthMethod", "None");
    ih_expect_key(&first, "TargetPortalGroupTag", "1"); /* §13.9: the first response of a Normal session */
    ih_expect_key(&first, "TargetAlias", IH_TARGET_ALIAS);
    cr_assert_null(ih_key(&first, "MaxRecvDataSegmentLength"), "declared only as the login ends");
    cr_assert_eq(load_be16(first.bhs + 14), 0, "TSIH only in the final response");
    cr_assert_not(ih_negotiated(&h));

    login_offering(OPERATIONAL_TO_FULL, "HeaderDigest=None,CRC32C", "DataDigest=None",
                   "MaxRecvDataSegmentLength=65536", "MaxBurstLength=1048576", "FirstBurstLength=16384",
                   "ImmediateData=No", "InitialR2T=No", "MaxOutstandingR2T=4", "ErrorRecoveryLevel=0",
                   "DefaultTime2Wait=0", "DefaultTime2Retain=60", "MaxConnections=4", "DataPDUInOrder=Yes",
                   "DataSequenceInOrder=Yes", "X-com.example.Unknown=1", "IFMarker=No", NULL);
    struct ih_pdu last;
    ih_login_response(&h, &last, OPERATIONAL_TO_FULL, 0);
    cr_assert_eq(ih_stat_sn(&last), ih_stat_sn(&first) + 1);
    cr_assert_neq(load_be16(last.bhs + 14), 0, "the final response carries the new TSIH");
    ih_expect_key(&last, "HeaderDigest", "None");
    ih_expect_key(&last, "DataDigest", "None");
    ih_expect_key(&last, "MaxBurstLength", "262144");  /* minimum */
    ih_expect_key(&last, "FirstBurstLength", "16384"); /* minimum */
    ih_expect_key(&last, "ImmediateData", "No");       /* AND */
    ih_expect_key(&last, "InitialR2T", "Yes");         /* OR */
    ih_expect_key(&last, "MaxOutstandingR2T", "4");
    ih_expect_key(&last, "ErrorRecoveryLevel", "0");
    ih_expect_key(&last, "DefaultTime2Wait", "2");     /* maximum */
    ih_expect_key(&last, "DefaultTime2Retain", "20");  /* minimum */
    ih_expect_key(&last, "MaxConnections", "1");
    ih_expect_key(&last, "DataPDUInOrder", "Yes");
    ih_expect_key(&last, "DataSequenceInOrder", "Yes");
    ih_expect_key(&last, "X-com.example.Unknown", "NotUnderstood");
    ih_expect_key(&last, "IFMarker", "No");
    ih_expect_key(&last, "MaxRecvDataSegmentLength", "262144"); /* declarative, the target's own */
    cr_assert_null(ih_key(&last, "TargetPortalGroupTag"), "only in the first response");
    cr_assert(ih_negotiated(&h));
    cr_assert_eq(ih_status(&h), SESSION_ACTIVE);
    cr_assert(ih_wants_input(&h));
    ih_expect_nothing(&h);

    /* Full feature: the next status continues the login's StatSN; a non-immediate ping takes a CmdSN. */
    ih_nop_out(&h, 0x99, false, NULL, 0);
    struct ih_pdu nop;
    ih_next(&h, &nop);
    cr_assert_eq(ih_opcode(&nop), IH_OP_NOP_IN);
    ih_expect_stat_sn(&h, &nop);
    cr_assert_eq(ih_exp_cmd_sn(&nop), h.cmd_sn);
    cr_assert_eq(ih_max_cmd_sn(&nop), h.cmd_sn + 127);
}

Test(iscsi_login, immediate_data_yes_and_small_bursts_are_kept)
{
    struct ih_login_params params = {
        .max_burst = 16384, .first_burst = 8192, .immediate_data = "Yes", .max_outstanding_r2t = 64};
    ih_login_normal(&h, &params);
    cr_assert_eq(h.max_burst, 16384);
    cr_assert_eq(h.first_burst, 8192);
    cr_assert(h.immediate_data);
    cr_assert_eq(h.max_outstanding_r2t, 16, "minimum with the target's 16");
}

Test(iscsi_login, security_stage_may_be_skipped)
{
    login_offering(OPERATIONAL_TO_FULL, INITIATOR, TARGET, "MaxRecvDataSegmentLength=8192", NULL);
    struct ih_pdu pdu;
    ih_login_response(&h, &pdu, OPERATIONAL_TO_FULL, 0);
    ih_expect_key(&pdu, "TargetPortalGroupTag", "1");
    ih_expect_key(&pdu, "MaxRecvDataSegmentLength", "262144");
    cr_assert_neq(load_be16(pdu.bhs + 14), 0);
    cr_assert(ih_negotiated(&h));
}

Test(iscsi_login, security_stage_without_transit_stays)
{
    login_offering(IH_STAGES(IH_SECURITY, IH_SECURITY), INITIATOR, TARGET, "AuthMethod=CHAP,None", NULL);
    struct ih_pdu pdu;
    ih_login_response(&h, &pdu, IH_STAGES(IH_SECURITY, 0), 0);
    ih_expect_key(&pdu, "AuthMethod", "None");
    cr_assert_eq(load_be16(pdu.bhs + 14), 0);
    login(SECURITY_TO_OPERATIONAL, NULL, 0);
    ih_login_response(&h, &pdu, SECURITY_TO_OPERATIONAL, 0);
    cr_assert_null(ih_key(&pdu, "TargetPortalGroupTag"), "already sent in the first response");
    login(OPERATIONAL_TO_FULL, NULL, 0);
    ih_login_response(&h, &pdu, OPERATIONAL_TO_FULL, 0);
    cr_assert_neq(load_be16(pdu.bhs + 14), 0);
    cr_assert(ih_negotiated(&h));
}

/* Partial headers and segments at every position: the framing must not care how bytes arrive. */
Test(iscsi_login, login_fed_one_byte_at_a_time)
{
    h.chunk = 1;
    ih_login_normal(&h, NULL);
    ih_nop_out(&h, 0x42, true, "ping", 4);
    struct ih_pdu pdu;
    ih_next(&h, &pdu);
    cr_assert_eq(ih_opcode(&pdu), IH_OP_NOP_IN);
    cr_assert_eq(pdu.length, 4);
    cr_assert(memcmp(pdu.data, "ping", 4) == 0);
}

Test(iscsi_login, keys_continued_over_two_pdus_are_gathered)
{
    char keys[256];
    uint32_t length = ih_keys(keys, sizeof(keys), INITIATOR, TARGET, "SessionType=Normal", "AuthMethod=None", NULL);
    uint32_t split = (uint32_t)strlen(INITIATOR) + 1 + 6; /* inside "TargetName" */
    login(IH_LOGIN_C | IH_STAGES(IH_SECURITY, IH_OPERATIONAL), keys, split);
    struct ih_pdu pdu;
    /* §11.13: the answer to a continued PDU is empty, without T, so the initiator sends the rest. */
    ih_login_response(&h, &pdu, IH_STAGES(IH_SECURITY, 0), 0);
    cr_assert_eq(pdu.length, 0);
    cr_assert_eq(load_be16(pdu.bhs + 14), 0);
    login(SECURITY_TO_OPERATIONAL, keys + split, length - split);
    ih_login_response(&h, &pdu, SECURITY_TO_OPERATIONAL, 0);
    ih_expect_key(&pdu, "AuthMethod", "None");
    ih_expect_key(&pdu, "TargetPortalGroupTag", "1");
    login(OPERATIONAL_TO_FULL, NULL, 0);
    ih_login_response(&h, &pdu, OPERATIONAL_TO_FULL, 0);
    cr_assert(ih_negotiated(&h));
}

Test(iscsi_login, discovery_answers_session_keys_irrelevant)
{
    login_offering(SECURITY_TO_OPERATIONAL, INITIATOR, "SessionType=Discovery", "AuthMethod=None", NULL);
    struct ih_pdu pdu;
    ih_login_response(&h, &pdu, SECURITY_TO_OPERATIONAL, 0);
    ih_expect_key(&pdu, "AuthMethod", "None");
    login_offering(OPERATIONAL_TO_FULL, "HeaderDigest=None", "MaxRecvDataSegmentLength=4096", "InitialR2T=No",
                   "ImmediateData=Yes", "MaxBurstLength=65536", "FirstBurstLength=4096", "MaxOutstandingR2T=2",
                   "MaxConnections=2", "DefaultTime2Wait=5", "X-org.example.Foo=bar", NULL);
    ih_login_response(&h, &pdu, OPERATIONAL_TO_FULL, 0);
    ih_expect_key(&pdu, "HeaderDigest", "None");
    static const char *const irrelevant[] = {"InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength",
                                             "MaxOutstandingR2T", "MaxConnections", "DefaultTime2Wait"};
    for (size_t i = 0; i < sizeof(irrelevant) / sizeof(irrelevant[0]); i++)
        ih_expect_key(&pdu, irrelevant[i], "Irrelevant");
    ih_expect_key(&pdu, "X-org.example.Foo", "NotUnderstood");
    ih_expect_key(&pdu, "MaxRecvDataSegmentLength", "262144");
    cr_assert_neq(load_be16(pdu.bhs + 14), 0);
    cr_assert(ih_negotiated(&h));
}

/* ---- refusals (§11.13.5) ---- */

Test(iscsi_login, unknown_target_is_0203)
{
    login_offering(SECURITY_TO_OPERATIONAL, INITIATOR, "TargetName=iqn.2026-12.org.example:nope", "AuthMethod=None",
                   NULL);
    expect_refused(IH_SECURITY, 0x0203);
}

Test(iscsi_login, missing_initiator_name_is_0207)
{
    login_offering(SECURITY_TO_OPERATIONAL, TARGET, "AuthMethod=None", NULL);
    expect_refused(IH_SECURITY, 0x0207);
}

Test(iscsi_login, missing_target_name_in_a_normal_session_is_0207)
{
    login_offering(OPERATIONAL_TO_FULL, INITIATOR, NULL);
    expect_refused(IH_OPERATIONAL, 0x0207);
}

Test(iscsi_login, chap_only_auth_method_is_0201)
{
    login_offering(SECURITY_TO_OPERATIONAL, INITIATOR, TARGET, "AuthMethod=CHAP", NULL);
    expect_refused(IH_SECURITY, 0x0201);
}

Test(iscsi_login, transit_backwards_is_0200)
{
    login_offering(IH_LOGIN_T | IH_STAGES(IH_OPERATIONAL, IH_SECURITY), INITIATOR, TARGET, NULL);
    expect_refused(IH_OPERATIONAL, 0x0200);
}

Test(iscsi_login, back_to_the_security_stage_is_0200)
{
    login_offering(SECURITY_TO_OPERATIONAL, INITIATOR, TARGET, "AuthMethod=None", NULL);
    struct ih_pdu pdu;
    ih_login_response(&h, &pdu, SECURITY_TO_OPERATIONAL, 0);
    login(SECURITY_TO_OPERATIONAL, NULL, 0); /* CSG must now be operational */
    expect_refused(IH_SECURITY, 0x0200);
}

Test(iscsi_login, reserved_next_stage_is_0200)
{
    login_offering(IH_LOGIN_T | IH_STAGES(IH_SECURITY, 2), INITIATOR, TARGET, NULL);
    expect_refused(IH_SECURITY, 0x0200);
}

Test(iscsi_login, tsih_of_an_existing_session_is_020a)
{
    char keys[256];
    uint32_t length = ih_keys(keys, sizeof(keys), INITIATOR, TARGET, NULL);
    ih_login(&h, OPERATIONAL_TO_FULL, 0x1234, keys, length);
    expect_refused(IH_OPERATIONAL, 0x020a);
}

Test(iscsi_login, unsupported_version_is_0205)
{
    char keys[256];
    uint32_t length = ih_keys(keys, sizeof(keys), INITIATOR, TARGET, NULL);
    uint8_t bhs[IH_BHS] = {IH_OP_LOGIN | IH_IMMEDIATE, OPERATIONAL_TO_FULL, 0x02, 0x01}; /* Version-max 2, min 1 */
    memcpy(bhs + 8, h.isid, 6);
    store_be32(bhs + 16, h.login_itt);
    store_be32(bhs + 24, h.cmd_sn);
    ih_send(&h, bhs, keys, length);
    expect_refused(IH_OPERATIONAL, 0x0205);
}

Test(iscsi_login, value_outside_the_domain_is_rejected_with_0200)
{
    login_offering(OPERATIONAL_TO_FULL, INITIATOR, TARGET, "MaxBurstLength=100", NULL);
    expect_refused(IH_OPERATIONAL, 0x0200);
}

Test(iscsi_login, other_opcodes_before_login_close)
{
    ih_nop_out(&h, 1, true, NULL, 0);
    cr_assert_eq(ih_status(&h), SESSION_CLOSED);
    cr_assert_not(ih_wants_input(&h));
    ih_expect_nothing(&h);
}

Test(iscsi_login, oversized_login_segment_closes)
{
    /* 8192 bytes until MaxRecvDataSegmentLength is negotiated (§13.12). */
    uint8_t bhs[IH_BHS] = {IH_OP_LOGIN | IH_IMMEDIATE, OPERATIONAL_TO_FULL};
    memcpy(bhs + 8, h.isid, 6);
    store_be24(bhs + 5, 8193);
    ih_feed(&h, bhs, sizeof(bhs));
    cr_assert_eq(ih_status(&h), SESSION_CLOSED);
    ih_expect_nothing(&h);
}

/* ---- regressions: inputs that once broke the target ---- */

TestSuite(iscsi_login_regressions, .init = setup, .fini = teardown);

/*
 * A discovery login whose later PDU says SessionType=Normal enters the full
 * feature phase as a normal session with no target: open_luns()
 * dereferences session->target (NULL) and the process dies (SIGSEGV).  The
 * session type is only valid in the leading login request (§13.21); the
 * target must refuse (0x0200) or keep the session a discovery session.
 */
Test(iscsi_login_regressions, session_type_changed_to_normal_without_target_name)
{
    login_offering(SECURITY_TO_OPERATIONAL, INITIATOR, "SessionType=Discovery", NULL);
    struct ih_pdu pdu;
    ih_login_response(&h, &pdu, SECURITY_TO_OPERATIONAL, 0);
    login_offering(OPERATIONAL_TO_FULL, "SessionType=Normal", NULL);
    ih_next(&h, &pdu);
    cr_assert_eq(ih_opcode(&pdu), IH_OP_LOGIN_RESPONSE);
    cr_assert_neq(pdu.bhs[36], 0, "a normal session without TargetName must be refused");
}

/*
 * FirstBurstLength offered before MaxBurstLength: the target answers
 * FirstBurstLength=65536 and MaxBurstLength=8192, breaking §13.14
 * ("FirstBurstLength MUST NOT exceed MaxBurstLength"), and then enforces
 * 8192 while the initiator believes 65536 (immediate data beyond 8192
 * closes the connection).
 */
Test(iscsi_login_regressions, first_burst_answer_never_exceeds_max_burst)
{
    login_offering(OPERATIONAL_TO_FULL, INITIATOR, TARGET, "FirstBurstLength=65536", "MaxBurstLength=8192", NULL);
    struct ih_pdu pdu;
    ih_login_response(&h, &pdu, OPERATIONAL_TO_FULL, 0);
    ih_expect_key(&pdu, "MaxBurstLength", "8192");
    const char *first_burst = ih_key(&pdu, "FirstBurstLength");
    cr_assert_not_null(first_burst);
    cr_assert_leq(strtoul(first_burst, NULL, 10), 8192, "FirstBurstLength=%s with MaxBurstLength=8192",
                  first_burst);
}

/*
 * A key offered twice is answered twice ("ImmediateData=Yes" and then
 * "ImmediateData=No"), the last one winning.  RFC 7143 §6.2 (RFC 3720
 * §5.3): redeclaring or renegotiating a key "MUST be detected" and the
 * target "MUST respond with Login reject (initiator error)".  (The fuzzer
 * met it as "DataDigest=CRC32C" then "DataDigest=None": two contradicting
 * digest answers in one response.)
 */
Test(iscsi_login_regressions, a_repeated_key_is_refused)
{
    login_offering(OPERATIONAL_TO_FULL, INITIATOR, TARGET, "ImmediateData=Yes", "ImmediateData=No", NULL);
    expect_refused(IH_OPERATIONAL, 0x0200);
}
