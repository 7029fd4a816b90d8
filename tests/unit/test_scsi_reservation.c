/*
 * Reservations in the SCSI core, two nexuses on one LUN: persistent
 * reservations (register, reserve, the conflicts of each type, release,
 * preempt, clear, the PERSISTENT RESERVE IN reports) and RESERVE / RELEASE
 * (6), released by nexus loss and by a LUN reset, which also owes the other
 * nexuses a unit attention.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/byte_order.h"
#include "protocols/scsi/scsi_persist.h"
#include "test_scsi_harness.h"

#define A "iqn.2026-12.org.luna.test:a,i,0x400000000001"
#define B "iqn.2026-12.org.luna.test:b,i,0x400000000002"

static uint8_t status_of(const uint8_t *cdb, size_t length, const void *out, size_t out_length, const char *nexus)
{
    return run(cdb, length, out, out_length, nexus).status;
}

/* PERSISTENT RESERVE OUT: service action, type, key and service action key. */
static uint8_t pr_out(const char *nexus, uint8_t action, uint8_t type, uint64_t key, uint64_t service_key)
{
    uint8_t cdb[10] = {0x5f, action, type};
    store_be32(cdb + 5, 24);
    uint8_t parameters[24] = {0};
    store_be64(parameters, key);
    store_be64(parameters + 8, service_key);
    return status_of(cdb, 10, parameters, sizeof(parameters), nexus);
}

static uint8_t read10(const char *nexus)
{
    uint8_t cdb[10] = {0x28};
    store_be16(cdb + 7, 1);
    return status_of(cdb, 10, NULL, 0, nexus);
}

static uint8_t write10(const char *nexus)
{
    uint8_t cdb[10] = {0x2a};
    store_be16(cdb + 7, 1);
    uint8_t block[BLOCK] = {0};
    return status_of(cdb, 10, block, sizeof(block), nexus);
}

static void both_attend(void)
{
    attend(A);
    attend(B);
}

TestSuite(scsi_reservation, .init = setup, .fini = teardown);

Test(scsi_reservation, write_exclusive_registrants_only)
{
    both_attend();
    cr_assert_eq(pr_out(A, 0, 0, 0, 0xaaaa), SCSI_STATUS_GOOD, "REGISTER");
    cr_assert_eq(pr_out(A, 1, 5, 0xaaaa, 0), SCSI_STATUS_GOOD, "RESERVE write exclusive, registrants only");
    cr_assert_eq(write10(A), SCSI_STATUS_GOOD);
    cr_assert_eq(write10(B), SCSI_STATUS_RESERVATION_CONFLICT, "B is not registered");
    cr_assert_eq(read10(B), SCSI_STATUS_GOOD, "reads stay open");
    cr_assert_eq(pr_out(B, 0, 0, 0, 0xbbbb), SCSI_STATUS_GOOD);
    cr_assert_eq(write10(B), SCSI_STATUS_GOOD, "a registrant may write");
    cr_assert_eq(pr_out(B, 1, 5, 0xbbbb, 0), SCSI_STATUS_RESERVATION_CONFLICT, "A holds it");
    cr_assert_eq(pr_out(B, 0, 0, 0x1234, 0x5678), SCSI_STATUS_RESERVATION_CONFLICT, "REGISTER with a wrong key");

    /* READ KEYS and READ RESERVATION. */
    uint8_t in[10] = {0x5e, 0};
    store_be16(in + 7, 256);
    struct scsi_task task = run(in, 10, NULL, 0, A);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
    cr_assert_eq(load_be32(data_in + 4), 16, "two keys");
    uint64_t k0 = load_be64(data_in + 8), k1 = load_be64(data_in + 16);
    cr_assert((k0 == 0xaaaa && k1 == 0xbbbb) || (k0 == 0xbbbb && k1 == 0xaaaa));
    in[1] = 1;
    task = run(in, 10, NULL, 0, B);
    cr_assert_eq(load_be32(data_in + 4), 16);
    cr_assert_eq(load_be64(data_in + 8), 0xaaaa, "the holder's key");
    cr_assert_eq(data_in[8 + 13], 5, "the type");

    cr_assert_eq(pr_out(A, 2, 3, 0xaaaa, 0), SCSI_STATUS_CHECK_CONDITION, "RELEASE with the wrong type");
    cr_assert_eq(pr_out(A, 2, 5, 0xaaaa, 0), SCSI_STATUS_GOOD, "RELEASE");
    in[1] = 1;
    task = run(in, 10, NULL, 0, B);
    expect_sense(&task, 0x06, 0x2a, 0x04); /* RESERVATIONS RELEASED: B, a registrant, lost its access */
    task = run(in, 10, NULL, 0, B);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD, "one unit attention only");
    cr_assert_eq(load_be32(data_in + 4), 0, "no reservation");
    cr_assert_eq(read10(A), SCSI_STATUS_GOOD, "the releaser is not told");
}

Test(scsi_reservation, exclusive_access_preempt_and_clear)
{
    both_attend();
    cr_assert_eq(pr_out(A, 0, 0, 0, 0xa), SCSI_STATUS_GOOD);
    cr_assert_eq(pr_out(B, 0, 0, 0, 0xb), SCSI_STATUS_GOOD);
    cr_assert_eq(pr_out(A, 1, 3, 0xa, 0), SCSI_STATUS_GOOD, "RESERVE exclusive access");
    cr_assert_eq(read10(B), SCSI_STATUS_RESERVATION_CONFLICT, "exclusive access: no reads either");
    uint8_t tur[6] = {0};
    cr_assert_eq(status_of(tur, 6, NULL, 0, B), SCSI_STATUS_GOOD, "TEST UNIT READY is allowed");
    uint8_t inquiry[6] = {0x12, 0, 0, 0, 36, 0};
    cr_assert_eq(status_of(inquiry, 6, NULL, 0, B), SCSI_STATUS_GOOD);

    cr_assert_eq(pr_out(B, 4, 1, 0xb, 0xa), SCSI_STATUS_GOOD, "B preempts A");
    uint8_t read_cdb[10] = {0x28};
    store_be16(read_cdb + 7, 1);
    struct scsi_task task = run(read_cdb, 10, NULL, 0, A);
    expect_sense(&task, 0x06, 0x2a, 0x05); /* REGISTRATIONS PREEMPTED */
    cr_assert_eq(read10(A), SCSI_STATUS_GOOD, "write exclusive now: reads open");
    cr_assert_eq(write10(A), SCSI_STATUS_RESERVATION_CONFLICT, "A is B's no more");
    cr_assert_eq(pr_out(A, 0, 0, 0xa, 0xc), SCSI_STATUS_RESERVATION_CONFLICT, "A's registration is gone");
    cr_assert_eq(read10(B), SCSI_STATUS_GOOD, "the preempter is not told");
    cr_assert_eq(pr_out(A, 0, 0, 0, 0xc), SCSI_STATUS_GOOD, "A registers again");
    cr_assert_eq(pr_out(B, 3, 0, 0xb, 0), SCSI_STATUS_GOOD, "CLEAR");
    task = run(read_cdb, 10, NULL, 0, A);
    expect_sense(&task, 0x06, 0x2a, 0x03); /* RESERVATIONS PREEMPTED: the CLEAR took A's registration */
    cr_assert_eq(write10(A), SCSI_STATUS_GOOD, "nothing reserved");
    cr_assert_eq(read10(B), SCSI_STATUS_GOOD, "the clearer is not told");
}

Test(scsi_reservation, reserve6_released_by_nexus_loss_and_reset)
{
    both_attend();
    uint8_t reserve[6] = {0x16}, release[6] = {0x17}, tur[6] = {0};
    cr_assert_eq(status_of(reserve, 6, NULL, 0, A), SCSI_STATUS_GOOD);
    cr_assert_eq(read10(B), SCSI_STATUS_RESERVATION_CONFLICT);
    cr_assert_eq(status_of(tur, 6, NULL, 0, B), SCSI_STATUS_RESERVATION_CONFLICT, "SPC-2: even TEST UNIT READY");
    cr_assert_eq(status_of(reserve, 6, NULL, 0, B), SCSI_STATUS_RESERVATION_CONFLICT);
    cr_assert_eq(status_of(release, 6, NULL, 0, B), SCSI_STATUS_GOOD, "releasing another's does nothing");
    cr_assert_eq(read10(B), SCSI_STATUS_RESERVATION_CONFLICT);
    cr_assert_eq(pr_out(B, 0, 0, 0, 0xb), SCSI_STATUS_RESERVATION_CONFLICT, "no PR under an SPC-2 reservation");

    scsi_lun_nexus_lost(lun, A);
    cr_assert_eq(read10(B), SCSI_STATUS_GOOD, "gone with A's nexus");

    cr_assert_eq(status_of(reserve, 6, NULL, 0, B), SCSI_STATUS_GOOD);
    scsi_lun_reset(lun, A);
    struct scsi_task task = run(tur, 6, NULL, 0, B);
    expect_sense(&task, 0x06, 0x29, 0x00); /* the reset's unit attention for B */
    cr_assert_eq(read10(A), SCSI_STATUS_GOOD, "the reset released B's reservation; A sent it: no attention");
}

/* ---- SPEC_I_PT and REGISTER AND MOVE: TransportIDs in the parameter list ---- */

#define C "iqn.2026-12.org.luna.test:c,i,0x400000000003"
#define A2 "iqn.2026-12.org.luna.test:a,i,0x400000000009" /* the initiator device A's other port */
#define MAX_REGISTRATIONS 64 /* per LUN: SCSI_MAX_REGISTRATIONS, as docs/iscsi.md states */

static uint8_t list[8192];

/* An iSCSI TransportID (format 0: device, 1: port) for name at out; its length. */
static size_t put_id(uint8_t *out, uint8_t format, const char *name)
{
    size_t padded = (strlen(name) + 1 + 3) & ~(size_t)3;
    memset(out, 0, 4 + padded);
    out[0] = (uint8_t)(format << 6 | 0x05);
    store_be16(out + 2, (uint16_t)padded);
    memcpy(out + 4, name, strlen(name));
    return 4 + padded;
}

/* A REGISTER parameter list with SPEC_I_PT and the ports names[] (format 01b) in list; its length. */
static size_t spec_i_pt_list(uint64_t key, uint64_t service_key, const char *const *names, size_t count)
{
    memset(list, 0, 28);
    store_be64(list, key);
    store_be64(list + 8, service_key);
    list[20] = 0x08;
    size_t at = 28;
    for (size_t i = 0; i < count; i++)
        at += put_id(list + at, 1, names[i]);
    store_be32(list + 24, (uint32_t)(at - 28));
    return at;
}

/* A REGISTER AND MOVE parameter list in list naming port; its length. */
static size_t move_list(uint64_t key, uint64_t service_key, bool unreg, uint16_t target_port, const char *port)
{
    memset(list, 0, 24);
    store_be64(list, key);
    store_be64(list + 8, service_key);
    list[17] = unreg ? 0x02 : 0;
    store_be16(list + 18, target_port);
    size_t at = 24 + put_id(list + 24, 1, port);
    store_be32(list + 20, (uint32_t)(at - 24));
    return at;
}

/* PERSISTENT RESERVE OUT with a parameter list of length bytes, of which sent arrive. */
static struct scsi_task pr_out_list(const char *nexus, uint8_t action, uint8_t type, size_t length, size_t sent)
{
    uint8_t cdb[10] = {0x5f, action, type};
    store_be32(cdb + 5, (uint32_t)length);
    return run(cdb, 10, list, sent, nexus);
}

static void pr_in(const char *nexus, uint8_t action)
{
    uint8_t cdb[10] = {0x5e, action};
    store_be16(cdb + 7, 0xffff);
    struct scsi_task task = run(cdb, 10, NULL, 0, nexus);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
}

static uint32_t generation(void)
{
    pr_in(A, 0);
    return load_be32(data_in);
}

static uint32_t key_count(void)
{
    pr_in(A, 0);
    return load_be32(data_in + 4) / 8;
}

struct full_status {
    bool registered, holder;
    uint64_t key;
    uint8_t type;
    uint16_t target_port;
};

/* READ FULL STATUS's descriptor of port (exact spelling), its TransportID checked. */
static struct full_status full_status_of(const char *port)
{
    pr_in(A, 3);
    struct full_status found = {0};
    size_t end = 8 + load_be32(data_in + 4);
    for (size_t at = 8; at < end;) {
        const uint8_t *d = data_in + at;
        uint32_t id_length = load_be32(d + 20);
        cr_assert_eq(d[24], 0x45, "a port TransportID, iSCSI");
        if (strcmp((const char *)d + 28, port) == 0)
            found = (struct full_status){.registered = true, .holder = d[12] & 0x01, .key = load_be64(d),
                                         .type = d[13], .target_port = load_be16(d + 18)};
        at += 24 + id_length;
    }
    return found;
}

static void expect_refused(const char *nexus, uint8_t action, size_t length, uint8_t key, uint8_t asc, uint8_t ascq)
{
    struct scsi_task task = pr_out_list(nexus, action, 0, length, length);
    expect_sense(&task, key, asc, ascq);
}

Test(scsi_reservation, spec_i_pt_registers_the_sender_and_the_ports_named)
{
    attend(A);
    uint32_t before = generation();
    /* B has never logged in; its name in other letter cases, as an initiator may send it. */
    const char *names[] = {"iqn.2026-12.org.luna.test:b,I,0X400000000002", C, A,
                           "iqn.2026-12.org.luna.test:d,i,0x40000000ABCD"};
    size_t length = spec_i_pt_list(0, 0xabc, names, 4);
    cr_assert_eq(pr_out_list(A, 0, 0, length, length).status, SCSI_STATUS_GOOD);
    cr_assert_eq(generation(), before + 1, "one PRgeneration for the whole registration");
    cr_assert_eq(key_count(), 4, "A, B, C and D; A naming itself counts once");
    cr_assert(full_status_of("iqn.2026-12.org.luna.test:d,i,0x40000000abcd").registered,
              "the ISID's hex digits as the login spells them");
    struct full_status a = full_status_of(A), b = full_status_of(B), c = full_status_of(C);
    cr_assert(a.registered && b.registered && c.registered, "B under its login's spelling");
    cr_assert(a.key == 0xabc && b.key == 0xabc && c.key == 0xabc);
    cr_assert_eq(b.target_port, 1);

    attend(B);
    cr_assert_eq(pr_out(B, 1, 1, 0xabc, 0), SCSI_STATUS_GOOD, "B logs in registered: it reserves with the key");
    attend(C);
    cr_assert_eq(write10(C), SCSI_STATUS_RESERVATION_CONFLICT);
    cr_assert_eq(pr_out(C, 0, 0, 0xabc, 0), SCSI_STATUS_GOOD, "C unregisters with the key given for it");
    cr_assert_eq(key_count(), 3);
}

Test(scsi_reservation, spec_i_pt_device_transport_id_names_every_known_port)
{
    attend(A);
    attend(A2);
    attend(B);
    memset(list, 0, 28);
    store_be64(list + 8, 0xb0);
    list[20] = 0x08;
    size_t at = 28 + put_id(list + 28, 0, "IQN.2026-12.org.luna.test:A"); /* format 00b, letters' case aside */
    store_be32(list + 24, (uint32_t)(at - 28));
    cr_assert_eq(pr_out_list(B, 0, 0, at, at).status, SCSI_STATUS_GOOD);
    cr_assert_eq(key_count(), 3);
    cr_assert(full_status_of(A).registered && full_status_of(A2).registered && full_status_of(B).registered);

    /* A device no port of which has addressed the LUN: nothing it names can be registered. */
    attend(C);
    at = 28 + put_id(list + 28, 0, "iqn.2026-12.org.luna.test:z");
    store_be32(list + 24, (uint32_t)(at - 28));
    expect_refused(C, 0, at, 0x05, 0x26, 0x00);
    cr_assert_eq(key_count(), 3, "C not registered either");
}

Test(scsi_reservation, spec_i_pt_refusals)
{
    both_attend();
    const char *name_c[] = {C};
    size_t length = spec_i_pt_list(0, 0xa, name_c, 1);
    expect_refused(A, 6, length, 0x05, 0x26, 0x00); /* REGISTER AND IGNORE EXISTING KEY: REGISTER's only */
    expect_refused(A, 1, length, 0x05, 0x26, 0x00); /* nor RESERVE's */
    cr_assert_eq(key_count(), 0);

    cr_assert_eq(pr_out(A, 0, 0, 0, 0xa), SCSI_STATUS_GOOD);
    length = spec_i_pt_list(0xa, 0xaa, name_c, 1);
    expect_refused(A, 0, length, 0x05, 0x24, 0x00); /* SPEC_I_PT from a registered nexus: INVALID FIELD IN CDB */
    length = spec_i_pt_list(0x9, 0xaa, name_c, 1);
    cr_assert_eq(pr_out_list(A, 0, 0, length, length).status, SCSI_STATUS_RESERVATION_CONFLICT, "wrong key first");
    length = spec_i_pt_list(0x1, 0xbb, name_c, 1);
    cr_assert_eq(pr_out_list(B, 0, 0, length, length).status, SCSI_STATUS_RESERVATION_CONFLICT,
                 "unregistered with a key");

    /* A named port already registered: nothing is registered, not even the sender or C. */
    const char *c_and_a[] = {C, A};
    length = spec_i_pt_list(0, 0xbb, c_and_a, 2);
    expect_refused(B, 0, length, 0x05, 0x26, 0x00);
    cr_assert_eq(key_count(), 1);
    cr_assert_not(full_status_of(C).registered);
    cr_assert_eq(full_status_of(A).key, 0xa, "A's key untouched");

    /* Service action key zero from an unregistered nexus: nothing to do. */
    length = spec_i_pt_list(0, 0, name_c, 1);
    cr_assert_eq(pr_out_list(B, 0, 0, length, length).status, SCSI_STATUS_GOOD);
    cr_assert_eq(key_count(), 1);

    /* Another protocol's TransportID (Fibre Channel, 24 bytes). */
    memset(list, 0, 52);
    store_be64(list + 8, 0xbb);
    list[20] = 0x08;
    store_be32(list + 24, 24);
    list[28] = 0x00;
    expect_refused(B, 0, 52, 0x05, 0x26, 0x00);
    cr_assert_eq(key_count(), 1);
}

Test(scsi_reservation, spec_i_pt_all_or_none_within_the_registration_limit)
{
    attend(A);
    static char names[MAX_REGISTRATIONS][64];
    const char *ports[MAX_REGISTRATIONS];
    for (size_t i = 0; i < MAX_REGISTRATIONS; i++) {
        snprintf(names[i], sizeof(names[i]), "iqn.2026-12.org.luna.test:n,i,0x5000000000%02zx", i);
        ports[i] = names[i];
    }
    size_t length = spec_i_pt_list(0, 0x5, ports, MAX_REGISTRATIONS); /* with A: one too many */
    expect_refused(A, 0, length, 0x05, 0x55, 0x04);
    cr_assert_eq(key_count(), 0, "none registered");
    length = spec_i_pt_list(0, 0x5, ports, MAX_REGISTRATIONS - 1);
    cr_assert_eq(pr_out_list(A, 0, 0, length, length).status, SCSI_STATUS_GOOD, "exactly the limit");
    cr_assert_eq(key_count(), MAX_REGISTRATIONS);
    attend(B);
    length = spec_i_pt_list(0, 0xb, NULL, 0);
    expect_refused(B, 0, length, 0x05, 0x55, 0x04);
}

Test(scsi_reservation, register_and_move)
{
    attend(A);
    cr_assert_eq(pr_out(A, 0, 0, 0, 0xa), SCSI_STATUS_GOOD);
    cr_assert_eq(pr_out(A, 1, 5, 0xa, 0), SCSI_STATUS_GOOD, "write exclusive, registrants only");
    uint32_t before = generation();
    /* B has not logged in yet; the CDB's TYPE (1) is ignored: the reservation keeps its own. */
    size_t length = move_list(0xa, 0xb, false, 1, "iqn.2026-12.org.luna.test:b,i,0x400000000002");
    cr_assert_eq(pr_out_list(A, 7, 1, length, length).status, SCSI_STATUS_GOOD);
    cr_assert_eq(generation(), before + 1);
    pr_in(A, 1);
    cr_assert_eq(load_be32(data_in + 4), 16);
    cr_assert_eq(load_be64(data_in + 8), 0xb, "the reservation is B's, with B's key");
    cr_assert_eq(data_in[8 + 13], 5, "its type kept");
    struct full_status a = full_status_of(A), b = full_status_of(B);
    cr_assert(b.registered && b.holder && b.type == 5 && b.key == 0xb);
    cr_assert(a.registered && !a.holder && a.key == 0xa, "A stays registered without UNREG");
    cr_assert_eq(write10(A), SCSI_STATUS_GOOD, "a registrant may write");

    attend(B);
    cr_assert_eq(write10(B), SCSI_STATUS_GOOD, "B holds it");
    /* Back to A, already registered: its key replaced; UNREG unregisters B. */
    length = move_list(0xb, 0xc, true, 1, A);
    cr_assert_eq(pr_out_list(B, 7, 0, length, length).status, SCSI_STATUS_GOOD);
    cr_assert_eq(key_count(), 1);
    a = full_status_of(A);
    cr_assert(a.holder && a.key == 0xc && a.type == 5);
    cr_assert_not(full_status_of(B).registered);
    cr_assert_eq(write10(B), SCSI_STATUS_RESERVATION_CONFLICT, "B is no registrant now");
    cr_assert_eq(read10(B), SCSI_STATUS_GOOD, "no unit attention for B: the move released nothing");
    cr_assert_eq(write10(A), SCSI_STATUS_GOOD);
}

Test(scsi_reservation, register_and_move_refusals)
{
    both_attend();
    size_t length = move_list(0xa, 0xb, false, 1, B);
    cr_assert_eq(pr_out_list(A, 7, 0, length, length).status, SCSI_STATUS_RESERVATION_CONFLICT, "unregistered");
    cr_assert_eq(pr_out(A, 0, 0, 0, 0xa), SCSI_STATUS_GOOD);
    expect_refused(A, 7, length, 0x05, 0x24, 0x00); /* no reservation to move */
    cr_assert_eq(pr_out(B, 0, 0, 0, 0xb), SCSI_STATUS_GOOD);
    cr_assert_eq(pr_out(A, 1, 3, 0xa, 0), SCSI_STATUS_GOOD);
    length = move_list(0x9, 0xb, false, 1, B);
    cr_assert_eq(pr_out_list(A, 7, 0, length, length).status, SCSI_STATUS_RESERVATION_CONFLICT, "wrong key");
    length = move_list(0xb, 0xb, false, 1, A);
    cr_assert_eq(pr_out_list(B, 7, 0, length, length).status, SCSI_STATUS_RESERVATION_CONFLICT, "not the holder");

    length = move_list(0xa, 0, false, 1, B);
    expect_refused(A, 7, length, 0x05, 0x26, 0x00); /* service action key zero */
    length = move_list(0xa, 0xbb, false, 1, "IQN.2026-12.org.luna.test:A,i,0x400000000001");
    expect_refused(A, 7, length, 0x05, 0x26, 0x00); /* the sender itself, whatever the case */
    length = move_list(0xa, 0xbb, false, 2, B);
    expect_refused(A, 7, length, 0x05, 0x26, 0x00); /* no target port 2 */
    length = move_list(0xa, 0xbb, false, 1, B);
    list[24] = 0x05; /* format 00b: a device, not one I_T nexus */
    expect_refused(A, 7, length, 0x05, 0x26, 0x00);
    length = move_list(0xa, 0xbb, false, 1, B);
    size_t more = put_id(list + length, 1, C);
    store_be32(list + 20, (uint32_t)(length + more - 24));
    expect_refused(A, 7, length + more, 0x05, 0x26, 0x00); /* two TransportIDs */
    length = move_list(0xa, 0xbb, false, 1, B);
    list[24] = 0x41; /* protocol 1: SPI */
    expect_refused(A, 7, length, 0x05, 0x26, 0x00);

    struct full_status a = full_status_of(A), b = full_status_of(B);
    cr_assert(a.holder && a.key == 0xa && a.type == 3, "nothing moved");
    cr_assert(!b.holder && b.key == 0xb);

    /* An all-registrants reservation has no one holder to move. */
    cr_assert_eq(pr_out(A, 2, 3, 0xa, 0), SCSI_STATUS_GOOD);
    cr_assert_eq(pr_out(A, 1, 7, 0xa, 0), SCSI_STATUS_GOOD);
    length = move_list(0xa, 0xbb, false, 1, C);
    cr_assert_eq(pr_out_list(A, 7, 0, length, length).status, SCSI_STATUS_RESERVATION_CONFLICT);
    cr_assert_not(full_status_of(C).registered);
}

Test(scsi_reservation, hostile_parameter_lists)
{
    both_attend();
    const char *name_b[] = {B};
    size_t length = spec_i_pt_list(0, 0xa, name_b, 1);
    struct scsi_task task = pr_out_list(A, 0, 0, 24, 24);
    expect_sense(&task, 0x05, 0x1a, 0x00); /* SPEC_I_PT in 24 bytes: no TRANSPORTID PARAMETER DATA LENGTH */
    task = pr_out_list(A, 0, 0, length, length - 8);
    expect_sense(&task, 0x05, 0x1a, 0x00); /* fewer bytes arrived than the CDB promised */
    store_be32(list + 24, (uint32_t)(length - 28 + 4));
    expect_refused(A, 0, length, 0x05, 0x1a, 0x00); /* TRANSPORTID PARAMETER DATA LENGTH past the end */
    store_be32(list + 24, 0xffffffffu);
    expect_refused(A, 0, length, 0x05, 0x1a, 0x00); /* ... far past it */
    store_be32(list + 24, (uint32_t)(length - 28 - 4));
    expect_refused(A, 0, length, 0x05, 0x1a, 0x00); /* short of the list's end */

    length = spec_i_pt_list(0, 0xa, name_b, 1);
    store_be16(list + 30, 0);
    expect_refused(A, 0, length, 0x05, 0x26, 0x00); /* ADDITIONAL LENGTH zero */
    length = spec_i_pt_list(0, 0xa, name_b, 1);
    store_be16(list + 30, (uint16_t)(load_be16(list + 30) - 2));
    expect_refused(A, 0, length, 0x05, 0x26, 0x00); /* not a multiple of four */
    length = spec_i_pt_list(0, 0xa, name_b, 1);
    store_be16(list + 30, (uint16_t)(load_be16(list + 30) + 4));
    expect_refused(A, 0, length, 0x05, 0x26, 0x00); /* past the TransportIDs */
    length = spec_i_pt_list(0, 0xa, name_b, 1);
    memset(list + 32, 'x', length - 32);
    expect_refused(A, 0, length, 0x05, 0x26, 0x00); /* no NUL terminator */
    length = spec_i_pt_list(0, 0xa, name_b, 1);
    store_be32(list + 24, 3);
    expect_refused(A, 0, 31, 0x05, 0x26, 0x00); /* three bytes: not even a header */
    const char *bad[] = {"iqn.2026-12.org.luna.test:b,i,0x4000000000", "iqn.2026-12.org.luna.test:b,i,0x40000000000g",
                         "iqn.2026-12.org.luna.test:b", ",i,0x400000000002", "iqn.2026-12.org luna:b,i,0x400000000002"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        length = spec_i_pt_list(0, 0xa, &bad[i], 1);
        expect_refused(A, 0, length, 0x05, 0x26, 0x00); /* not a port name: short or bad ISID, none, no IQN, a blank */
    }
    char long_name[300];
    memset(long_name, 'q', sizeof(long_name));
    snprintf(long_name + 270, 30, ",i,0x400000000002");
    const char *too_long[] = {long_name};
    length = spec_i_pt_list(0, 0xa, too_long, 1);
    expect_refused(A, 0, length, 0x05, 0x26, 0x00); /* longer than a nexus name can be here */

    /* Plain service actions: 24 bytes exactly. */
    memset(list, 0, 32);
    store_be64(list + 8, 0xa);
    expect_refused(A, 0, 28, 0x05, 0x1a, 0x00);
    expect_refused(A, 0, 20, 0x05, 0x1a, 0x00);

    /* REGISTER AND MOVE's own lengths. */
    cr_assert_eq(pr_out(A, 0, 0, 0, 0xa), SCSI_STATUS_GOOD);
    cr_assert_eq(pr_out(A, 1, 1, 0xa, 0), SCSI_STATUS_GOOD);
    length = move_list(0xa, 0xb, false, 1, B);
    expect_refused(A, 7, 20, 0x05, 0x1a, 0x00);
    store_be32(list + 20, 0);
    expect_refused(A, 7, 24, 0x05, 0x26, 0x00); /* no TransportID */
    length = move_list(0xa, 0xb, false, 1, B);
    store_be32(list + 20, (uint32_t)(length - 24 + 4));
    expect_refused(A, 7, length, 0x05, 0x1a, 0x00);
    task = pr_out_list(A, 7, 0, length + 4, length);
    expect_sense(&task, 0x05, 0x1a, 0x00);
    length = move_list(0xa, 0xb, false, 1, B);
    memset(list + 28, 'x', length - 28);
    expect_refused(A, 7, length, 0x05, 0x26, 0x00);

    cr_assert_eq(key_count(), 1, "only A's own REGISTER took");
    cr_assert(full_status_of(A).holder);
}

Test(scsi_reservation, report_capabilities_offers_spec_i_pt_only)
{
    attend(A);
    pr_in(A, 2);
    cr_assert_eq(data_in[2] & 0x08, 0x08, "SIP_C");
    cr_assert_eq(data_in[2] & 0x04, 0x00, "ATP_C");
    memset(list, 0, 24);
    store_be64(list + 8, 0xa);
    list[20] = 0x04;
    expect_refused(A, 0, 24, 0x05, 0x26, 0x00); /* ALL_TG_PT */
    cr_assert_eq(key_count(), 0);
}

/* ---- APTPL: a moved reservation is saved as moved ---- */

static char directory[] = "/tmp/luna-move-XXXXXX";
static struct scsi_persist_store *store;

static void setup_store(void)
{
    setup();
    cr_assert_not_null(mkdtemp(directory));
}

static void teardown_store(void)
{
    teardown();
    lun = NULL;
    scsi_persist_store_close(store);
    store = NULL;
    char command[64];
    snprintf(command, sizeof(command), "rm -rf %s", directory);
    cr_assert_eq(system(command), 0);
}

/* As a restart of lunad: the store read again from directory, a new LUN over the same disk. */
static void restart_lun(void)
{
    scsi_lun_destroy(lun);
    lun = NULL;
    scsi_persist_store_close(store);
    store = NULL;
    char *message = NULL;
    cr_assert_eq(scsi_persist_store_open(directory, &store, &message), 0, "%s", message ? message : "");
    struct scsi_lun_options options = {.bdev = bdev, .serial = "SN42", .persist = store, .persist_key = "move"};
    cr_assert_eq(scsi_lun_create(&options, &lun), 0);
}

TestSuite(scsi_reservation_aptpl, .init = setup_store, .fini = teardown_store);

Test(scsi_reservation_aptpl, register_and_move_is_saved)
{
    restart_lun();
    attend(A);
    memset(list, 0, 24);
    store_be64(list + 8, 0xa);
    list[20] = 0x01; /* APTPL */
    cr_assert_eq(pr_out_list(A, 0, 0, 24, 24).status, SCSI_STATUS_GOOD);
    cr_assert_eq(pr_out(A, 1, 6, 0xa, 0), SCSI_STATUS_GOOD, "exclusive access, registrants only");
    size_t length = move_list(0xa, 0xb, true, 1, B);
    list[17] |= 0x01; /* APTPL stays on */
    cr_assert_eq(pr_out_list(A, 7, 0, length, length).status, SCSI_STATUS_GOOD);
    uint32_t before = generation();

    restart_lun();
    attend(A);
    cr_assert_eq(generation(), before);
    cr_assert_eq(key_count(), 1, "A unregistered by UNREG");
    struct full_status b = full_status_of(B);
    cr_assert(b.holder && b.key == 0xb && b.type == 6, "B holds it after the restart");
    pr_in(A, 2);
    cr_assert_eq(data_in[3] & 0x01, 0x01, "PTPL_A");

    /* APTPL zero in a REGISTER AND MOVE is the last valid bit: the state is no longer kept. */
    attend(B);
    length = move_list(0xb, 0xc, false, 1, A);
    cr_assert_eq(pr_out_list(B, 7, 0, length, length).status, SCSI_STATUS_GOOD);
    pr_in(A, 2);
    cr_assert_eq(data_in[3] & 0x01, 0x00, "PTPL_A off");
}

Test(scsi_reservation, register_and_move_aptpl_refused_without_a_store)
{
    attend(A);
    cr_assert_eq(pr_out(A, 0, 0, 0, 0xa), SCSI_STATUS_GOOD);
    cr_assert_eq(pr_out(A, 1, 1, 0xa, 0), SCSI_STATUS_GOOD);
    size_t length = move_list(0xa, 0xb, false, 1, B);
    list[17] |= 0x01;
    expect_refused(A, 7, length, 0x05, 0x26, 0x00);
    cr_assert(full_status_of(A).holder);
}
