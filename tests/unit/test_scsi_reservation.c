/*
 * Reservations in the SCSI core, two nexuses on one LUN: persistent
 * reservations (register, reserve, the conflicts of each type, release,
 * preempt, clear, the PERSISTENT RESERVE IN reports) and RESERVE / RELEASE
 * (6), released by nexus loss and by a LUN reset, which also owes the other
 * nexuses a unit attention.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "common/byte_order.h"
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
