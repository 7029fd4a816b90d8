/* NBD handshake: the exact bytes the session queues for handcrafted client options. */
#include <criterion/criterion.h>
#include <string.h>

#include "block/export.h"
#include "protocols/nbd/nbd_session.h"
#include "protocols/nbd/nbd_wire.h"
#include "test_nbd_harness.h"

static struct harness h;

static void setup(void) { harness_init(&h, 0); }
static void teardown(void) { harness_fini(&h); }

TestSuite(nbd_handshake, .init = setup, .fini = teardown);

/* What a writable raw file export advertises (DF only with structured replies). */
static const uint16_t DISK_FLAGS = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                                   NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
                                   NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE |
                                   NBD_FLAG_SEND_FAST_ZERO;

static void start(uint32_t client_flags)
{
    harness_skip_greeting(&h);
    harness_client_flags(&h, client_flags);
    cr_assert_eq(harness_output_left(&h), 0);
}

static void expect_error_reply(uint32_t option, uint32_t error)
{
    uint32_t type, length;
    const uint8_t *message = harness_option_reply(&h, option, &type, &length);
    cr_assert_eq(type, error, "option %u: reply 0x%x, expected 0x%x", option, type, error);
    /* Error messages are optional, but must be valid strings. */
    cr_assert(length <= NBD_MAX_STRING);
    cr_assert(!message || !memchr(message, 0, length));
}

static void expect_closed(void)
{
    cr_assert_eq(nbd_session_status(h.session), SESSION_CLOSED);
    cr_assert_not(nbd_session_wants_input(h.session));
}

Test(nbd_handshake, greeting_is_fixed_newstyle_with_no_zeroes)
{
    const uint8_t expected[] = {'N', 'B', 'D', 'M', 'A', 'G', 'I', 'C',
                                'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T', 0x00, 0x03};
    cr_assert_eq(harness_output_left(&h), sizeof(expected));
    cr_assert(memcmp(harness_take(&h, sizeof(expected)), expected, sizeof(expected)) == 0);
    cr_assert_eq(nbd_session_status(h.session), SESSION_ACTIVE);
    cr_assert(nbd_session_wants_input(h.session));
}

Test(nbd_handshake, unknown_client_flags_close)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE | (1u << 5));
    expect_closed();
    cr_assert_eq(harness_output_left(&h), 0);
}

Test(nbd_handshake, export_name_sends_124_zeroes_without_no_zeroes)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    harness_option(&h, NBD_OPT_EXPORT_NAME, "disk", 4);
    const uint8_t *reply = harness_take(&h, 10 + 124);
    cr_assert_eq(load_be64(reply), HARNESS_DISK_SIZE);
    cr_assert_eq(load_be16(reply + 8), DISK_FLAGS);
    for (int i = 0; i < 124; i++)
        cr_assert_eq(reply[10 + i], 0);
    cr_assert_eq(harness_output_left(&h), 0);
    cr_assert_eq(nbd_session_status(h.session), SESSION_ACTIVE);
}

Test(nbd_handshake, export_name_with_no_zeroes_enters_transmission)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    harness_option(&h, NBD_OPT_EXPORT_NAME, "ro", 2);
    const uint8_t *reply = harness_take(&h, 10);
    cr_assert_eq(load_be64(reply), HARNESS_RO_SIZE);
    uint16_t flags = load_be16(reply + 8);
    cr_assert(flags & NBD_FLAG_READ_ONLY);
    cr_assert_not(flags & (NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_DF));
    cr_assert_eq(harness_output_left(&h), 0);
    /* Now in transmission: a simple read answers with the file's bytes. */
    harness_request(&h, 0, NBD_CMD_READ, 1, 4096, 100, NULL);
    harness_wait(&h);
    harness_expect_simple(&h, 1, 0);
    const uint8_t *data = harness_take(&h, 100);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(data[i], session_pattern_byte(4096 + i));
}

Test(nbd_handshake, empty_export_name_selects_the_first_export)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    harness_option(&h, NBD_OPT_EXPORT_NAME, NULL, 0);
    const uint8_t *reply = harness_take(&h, 10);
    cr_assert_eq(load_be64(reply), HARNESS_DISK_SIZE);
    cr_assert_eq(load_be16(reply + 8), DISK_FLAGS);
}

Test(nbd_handshake, unknown_export_name_closes)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    harness_option(&h, NBD_OPT_EXPORT_NAME, "nope", 4);
    expect_closed();
    cr_assert_eq(harness_output_left(&h), 0);
}

Test(nbd_handshake, go_answers_requested_infos)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    uint8_t data[64];
    const uint16_t requests[] = {NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE, 999};
    uint32_t length = harness_info_data(data, "", requests, 4);
    harness_option(&h, NBD_OPT_GO, data, length);

    uint32_t type, reply_length;
    const uint8_t *reply = harness_option_reply(&h, NBD_OPT_GO, &type, &reply_length);
    cr_assert_eq(type, NBD_REP_INFO);
    cr_assert_eq(reply_length, 2 + 4);
    cr_assert_eq(load_be16(reply), NBD_INFO_NAME);
    cr_assert(memcmp(reply + 2, "disk", 4) == 0, "canonical name of the default export");

    reply = harness_option_reply(&h, NBD_OPT_GO, &type, &reply_length);
    cr_assert_eq(type, NBD_REP_INFO);
    cr_assert_eq(load_be16(reply), NBD_INFO_DESCRIPTION);
    cr_assert_eq(reply_length, 2 + strlen("test disk"));
    cr_assert(memcmp(reply + 2, "test disk", reply_length - 2) == 0);

    reply = harness_option_reply(&h, NBD_OPT_GO, &type, &reply_length);
    cr_assert_eq(type, NBD_REP_INFO);
    cr_assert_eq(reply_length, 14);
    cr_assert_eq(load_be16(reply), NBD_INFO_BLOCK_SIZE);
    uint32_t alignment = h.world.table->exports[0]->bdev->limits.request_alignment;
    cr_assert_eq(load_be32(reply + 2), alignment ? alignment : 1);
    cr_assert_eq(load_be32(reply + 6), 4096);
    cr_assert_eq(load_be32(reply + 10), 32u << 20);

    reply = harness_option_reply(&h, NBD_OPT_GO, &type, &reply_length);
    cr_assert_eq(type, NBD_REP_INFO);
    cr_assert_eq(reply_length, 12);
    cr_assert_eq(load_be16(reply), NBD_INFO_EXPORT);
    cr_assert_eq(load_be64(reply + 2), HARNESS_DISK_SIZE);
    cr_assert_eq(load_be16(reply + 10), DISK_FLAGS);

    harness_expect_ack(&h, NBD_OPT_GO);
    cr_assert_eq(harness_output_left(&h), 0);
    /* GO never sends zero padding; transmission begins right away. */
    harness_request(&h, 0, NBD_CMD_FLUSH, 77, 0, 0, NULL);
    harness_wait(&h);
    harness_expect_simple(&h, 77, 0);
}

Test(nbd_handshake, go_without_requests_still_sends_block_size_and_export)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    uint8_t data[16];
    uint32_t length = harness_info_data(data, "ro", NULL, 0);
    harness_option(&h, NBD_OPT_GO, data, length);
    uint32_t type, reply_length;
    const uint8_t *reply = harness_option_reply(&h, NBD_OPT_GO, &type, &reply_length);
    cr_assert_eq(type, NBD_REP_INFO);
    cr_assert_eq(load_be16(reply), NBD_INFO_BLOCK_SIZE);
    reply = harness_option_reply(&h, NBD_OPT_GO, &type, &reply_length);
    cr_assert_eq(load_be16(reply), NBD_INFO_EXPORT);
    cr_assert(load_be16(reply + 10) & NBD_FLAG_READ_ONLY);
    harness_expect_ack(&h, NBD_OPT_GO);
}

Test(nbd_handshake, info_does_not_end_negotiation)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    uint8_t data[16];
    const uint16_t request = NBD_INFO_DESCRIPTION;
    uint32_t length = harness_info_data(data, "ro", &request, 1);
    harness_option(&h, NBD_OPT_INFO, data, length);
    uint32_t type, reply_length;
    /* "ro" has no description: only BLOCK_SIZE and EXPORT. */
    const uint8_t *reply = harness_option_reply(&h, NBD_OPT_INFO, &type, &reply_length);
    cr_assert_eq(load_be16(reply), NBD_INFO_BLOCK_SIZE);
    reply = harness_option_reply(&h, NBD_OPT_INFO, &type, &reply_length);
    cr_assert_eq(load_be16(reply), NBD_INFO_EXPORT);
    harness_expect_ack(&h, NBD_OPT_INFO);
    /* Still haggling: another option is answered as an option. */
    harness_option(&h, NBD_OPT_ABORT, NULL, 0);
    harness_expect_ack(&h, NBD_OPT_ABORT);
}

Test(nbd_handshake, go_to_unknown_export_is_an_error_and_negotiation_continues)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    uint8_t data[16];
    uint32_t length = harness_info_data(data, "missing", NULL, 0);
    harness_option(&h, NBD_OPT_GO, data, length);
    expect_error_reply(NBD_OPT_GO, NBD_REP_ERR_UNKNOWN);
    cr_assert_eq(harness_output_left(&h), 0);
    cr_assert_eq(nbd_session_status(h.session), SESSION_ACTIVE);
    length = harness_info_data(data, "disk", NULL, 0);
    harness_option(&h, NBD_OPT_GO, data, length);
    uint32_t type, reply_length;
    harness_option_reply(&h, NBD_OPT_GO, &type, &reply_length);
    cr_assert_eq(type, NBD_REP_INFO);
}

Test(nbd_handshake, malformed_go_is_invalid)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    uint8_t data[16];
    store_be32(data, 100); /* name longer than the option */
    store_be16(data + 4, 0);
    harness_option(&h, NBD_OPT_GO, data, 6);
    expect_error_reply(NBD_OPT_GO, NBD_REP_ERR_INVALID);
    /* Request count disagreeing with the length. */
    uint32_t length = harness_info_data(data, "disk", NULL, 0);
    store_be16(data + 8, 3);
    harness_option(&h, NBD_OPT_GO, data, length);
    expect_error_reply(NBD_OPT_GO, NBD_REP_ERR_INVALID);
    /* Too short to hold the fields at all. */
    harness_option(&h, NBD_OPT_INFO, data, 3);
    expect_error_reply(NBD_OPT_INFO, NBD_REP_ERR_INVALID);
    cr_assert_eq(nbd_session_status(h.session), SESSION_ACTIVE);
}

Test(nbd_handshake, list_names_every_export_with_its_description)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    harness_option(&h, NBD_OPT_LIST, NULL, 0);
    uint32_t type, length;
    const uint8_t *reply = harness_option_reply(&h, NBD_OPT_LIST, &type, &length);
    cr_assert_eq(type, NBD_REP_SERVER);
    cr_assert_eq(load_be32(reply), 4);
    cr_assert_eq(length, 4 + 4 + strlen("test disk"));
    cr_assert(memcmp(reply + 4, "disktest disk", length - 4) == 0);
    reply = harness_option_reply(&h, NBD_OPT_LIST, &type, &length);
    cr_assert_eq(type, NBD_REP_SERVER);
    cr_assert_eq(length, 4 + 2);
    cr_assert_eq(load_be32(reply), 2);
    cr_assert(memcmp(reply + 4, "ro", 2) == 0);
    reply = harness_option_reply(&h, NBD_OPT_LIST, &type, &length);
    cr_assert_eq(type, NBD_REP_SERVER);
    cr_assert_eq(length, 4 + 3);
    cr_assert(memcmp(reply + 4, "big", 3) == 0);
    harness_expect_ack(&h, NBD_OPT_LIST);
    /* LIST with data is refused. */
    harness_option(&h, NBD_OPT_LIST, "x", 1);
    expect_error_reply(NBD_OPT_LIST, NBD_REP_ERR_INVALID);
}

Test(nbd_handshake, unknown_option_is_unsupported_and_negotiation_continues)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    harness_option(&h, 4242, "some data", 9);
    expect_error_reply(4242, NBD_REP_ERR_UNSUP);
    harness_option(&h, NBD_OPT_PEEK_EXPORT, NULL, 0);
    expect_error_reply(NBD_OPT_PEEK_EXPORT, NBD_REP_ERR_UNSUP);
    harness_option(&h, NBD_OPT_STARTTLS, NULL, 0);
    expect_error_reply(NBD_OPT_STARTTLS, NBD_REP_ERR_UNSUP);
    cr_assert_eq(nbd_session_status(h.session), SESSION_ACTIVE);
    harness_option(&h, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
    harness_expect_ack(&h, NBD_OPT_STRUCTURED_REPLY);
}

Test(nbd_handshake, abort_acks_then_drains)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    harness_option(&h, NBD_OPT_ABORT, "ignored", 7);
    harness_expect_ack(&h, NBD_OPT_ABORT);
    cr_assert_eq(nbd_session_status(h.session), SESSION_DRAINING);
    cr_assert_not(nbd_session_wants_input(h.session));
}

Test(nbd_handshake, bad_option_magic_closes)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    uint8_t header[16];
    store_be64(header, NBD_MAGIC);
    store_be32(header + 8, NBD_OPT_LIST);
    store_be32(header + 12, 0);
    nbd_session_input(h.session, header, sizeof(header));
    expect_closed();
}

Test(nbd_handshake, meta_context_needs_structured_replies)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    uint8_t data[128];
    const char *query = "base:allocation";
    uint32_t length = harness_meta_data(data, "disk", &query, 1);
    harness_option(&h, NBD_OPT_SET_META_CONTEXT, data, length);
    expect_error_reply(NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID);
    harness_option(&h, NBD_OPT_LIST_META_CONTEXT, data, length);
    expect_error_reply(NBD_OPT_LIST_META_CONTEXT, NBD_REP_ERR_INVALID);
}

static void expect_allocation_context(uint32_t option, bool nonzero_id)
{
    uint32_t type, length;
    const uint8_t *reply = harness_option_reply(&h, option, &type, &length);
    cr_assert_eq(type, NBD_REP_META_CONTEXT);
    cr_assert_eq(length, 4 + 15);
    cr_assert(memcmp(reply + 4, "base:allocation", 15) == 0);
    if (nonzero_id)
        cr_assert_neq(load_be32(reply), 0);
    else
        cr_assert_eq(load_be32(reply), 0, "LIST replies carry id 0");
}

Test(nbd_handshake, meta_context_list_and_set)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    harness_option(&h, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
    harness_expect_ack(&h, NBD_OPT_STRUCTURED_REPLY);
    uint8_t data[256];

    /* No queries: list everything we support. */
    uint32_t length = harness_meta_data(data, "disk", NULL, 0);
    harness_option(&h, NBD_OPT_LIST_META_CONTEXT, data, length);
    expect_allocation_context(NBD_OPT_LIST_META_CONTEXT, false);
    harness_expect_ack(&h, NBD_OPT_LIST_META_CONTEXT);

    /* The "base:" wildcard lists base:allocation; unknown namespaces are ignored. */
    const char *list_queries[] = {"qemu:dirty-bitmap:x", "base:"};
    length = harness_meta_data(data, "disk", list_queries, 2);
    harness_option(&h, NBD_OPT_LIST_META_CONTEXT, data, length);
    expect_allocation_context(NBD_OPT_LIST_META_CONTEXT, false);
    harness_expect_ack(&h, NBD_OPT_LIST_META_CONTEXT);

    const char *unknown = "x-other:thing";
    length = harness_meta_data(data, "disk", &unknown, 1);
    harness_option(&h, NBD_OPT_LIST_META_CONTEXT, data, length);
    harness_expect_ack(&h, NBD_OPT_LIST_META_CONTEXT);

    /* SET: "base:" selects nothing; base:allocation is selected with a real id. */
    const char *set_queries[] = {"base:", "base:allocation", "qemu:allocation-depth"};
    length = harness_meta_data(data, "disk", set_queries, 3);
    harness_option(&h, NBD_OPT_SET_META_CONTEXT, data, length);
    expect_allocation_context(NBD_OPT_SET_META_CONTEXT, true);
    harness_expect_ack(&h, NBD_OPT_SET_META_CONTEXT);

    /* SET with no queries selects nothing. */
    length = harness_meta_data(data, "disk", NULL, 0);
    harness_option(&h, NBD_OPT_SET_META_CONTEXT, data, length);
    harness_expect_ack(&h, NBD_OPT_SET_META_CONTEXT);

    /* Unknown export, and a query running past the option. */
    const char *query = "base:allocation";
    length = harness_meta_data(data, "nope", &query, 1);
    harness_option(&h, NBD_OPT_SET_META_CONTEXT, data, length);
    expect_error_reply(NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_UNKNOWN);
    length = harness_meta_data(data, "disk", &query, 1);
    harness_option(&h, NBD_OPT_SET_META_CONTEXT, data, length - 3);
    expect_error_reply(NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID);
    cr_assert_eq(harness_output_left(&h), 0);
}

Test(nbd_handshake, structured_replies_advertise_df)
{
    uint16_t flags = harness_go(&h, "disk", true, false, true);
    cr_assert_eq(flags, DISK_FLAGS | NBD_FLAG_SEND_DF);
    cr_assert_neq(h.context_id, 0);
}

Test(nbd_handshake, extended_headers_negotiation)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    harness_option(&h, NBD_OPT_EXTENDED_HEADERS, "x", 1);
    expect_error_reply(NBD_OPT_EXTENDED_HEADERS, NBD_REP_ERR_INVALID);
    harness_option(&h, NBD_OPT_EXTENDED_HEADERS, NULL, 0);
    harness_expect_ack(&h, NBD_OPT_EXTENDED_HEADERS);
    /* Extended headers take precedence: no downgrade to structured replies. */
    harness_option(&h, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
    expect_error_reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_EXT_HEADER_REQD);
    /* Meta contexts work without STRUCTURED_REPLY once extended headers are on. */
    uint8_t data[128];
    const char *query = "base:allocation";
    uint32_t length = harness_meta_data(data, "disk", &query, 1);
    harness_option(&h, NBD_OPT_SET_META_CONTEXT, data, length);
    expect_allocation_context(NBD_OPT_SET_META_CONTEXT, true);
    harness_expect_ack(&h, NBD_OPT_SET_META_CONTEXT);
    /* EXPORT_NAME is forbidden after extended headers: it cannot be refused, so hang up. */
    harness_option(&h, NBD_OPT_EXPORT_NAME, "disk", 4);
    expect_closed();
}

Test(nbd_handshake, structured_then_extended_is_accepted)
{
    uint16_t flags = harness_go(&h, "disk", true, true, false);
    cr_assert(flags & NBD_FLAG_SEND_DF);
    cr_assert_not(flags & NBD_FLAG_BLOCK_STATUS_PAYLOAD);
}

Test(nbd_handshake, oversized_option_data_is_skipped_in_pieces)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    static uint8_t junk[100 << 10];
    memset(junk, 'a', sizeof(junk));
    uint8_t header[16];
    store_be64(header, NBD_IHAVEOPT);
    store_be32(header + 8, NBD_OPT_GO);
    store_be32(header + 12, sizeof(junk));
    harness_feed(&h, header, sizeof(header));
    /* The server offers at most 16 KiB at a time: the session must make progress. */
    for (size_t done = 0; done < sizeof(junk); done += 16384) {
        size_t n = sizeof(junk) - done < 16384 ? sizeof(junk) - done : 16384;
        harness_feed(&h, junk + done, n);
    }
    expect_error_reply(NBD_OPT_GO, NBD_REP_ERR_TOO_BIG);
    store_be32(header + 8, 5000);
    harness_feed(&h, header, sizeof(header));
    harness_feed(&h, junk, sizeof(junk));
    expect_error_reply(5000, NBD_REP_ERR_UNSUP);
    cr_assert_eq(nbd_session_status(h.session), SESSION_ACTIVE);
    /* An absurd length is a denial of service: hang up. */
    store_be32(header + 12, 1u << 30);
    harness_feed(&h, header, sizeof(header));
    expect_closed();
}

Test(nbd_handshake, overlong_export_name_closes)
{
    start(NBD_FLAG_C_FIXED_NEWSTYLE);
    uint8_t header[16];
    store_be64(header, NBD_IHAVEOPT);
    store_be32(header + 8, NBD_OPT_EXPORT_NAME);
    store_be32(header + 12, 5000);
    harness_feed(&h, header, sizeof(header));
    expect_closed();
}

Test(nbd_handshake, byte_at_a_time)
{
    harness_skip_greeting(&h);
    uint8_t bytes[64];
    store_be32(bytes, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    store_be64(bytes + 4, NBD_IHAVEOPT);
    store_be32(bytes + 12, NBD_OPT_GO);
    uint32_t length = harness_info_data(bytes + 20, "ro", NULL, 0);
    store_be32(bytes + 16, length);
    for (uint32_t i = 0; i < 20 + length; i++)
        harness_feed(&h, bytes + i, 1);
    uint32_t type, reply_length;
    harness_option_reply(&h, NBD_OPT_GO, &type, &reply_length);
    harness_option_reply(&h, NBD_OPT_GO, &type, &reply_length);
    harness_expect_ack(&h, NBD_OPT_GO);
    h.structured = h.extended = false;
    struct nbd_request_header request = {.type = NBD_CMD_READ, .cookie = 3, .offset = 0, .length = 8};
    uint8_t header[NBD_REQUEST_SIZE];
    nbd_request_encode(header, false, &request);
    for (size_t i = 0; i < sizeof(header); i++)
        harness_feed(&h, header + i, 1);
    harness_wait(&h);
    harness_expect_simple(&h, 3, 0);
    const uint8_t *data = harness_take(&h, 8);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(data[i], session_pattern_byte(i));
}
