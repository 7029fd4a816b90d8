/*
 * APTPL: persistent reservations saved in the state directory and found
 * again by the LUN of the next start; refused without a store; the file
 * removed when the last APTPL bit is zero; malformed files named with
 * their line.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/byte_order.h"
#include "protocols/scsi/scsi_persist.h"
#include "test_scsi_harness.h"

#define A "iqn.2026-12.org.luna.test:a,i,0x400000000001"
#define B "iqn.2026-12.org.luna.test:b,i,0x400000000002"
#define KEY "iqn.2026-12.org.luna.test:disk,0,disk 1"
#define FILE_NAME "iqn.2026-12.org.luna.test:disk,0,disk%201" /* the key, its space encoded */

static char directory[] = "/tmp/luna-aptpl-XXXXXX";
static struct scsi_persist_store *store;

static void setup_store(void)
{
    setup();
    cr_assert_not_null(mkdtemp(directory));
}

static void teardown_store(void)
{
    teardown(); /* the LUN first: it uses the store */
    lun = NULL;
    scsi_persist_store_close(store);
    store = NULL;
    char command[64];
    snprintf(command, sizeof(command), "rm -rf %s", directory);
    cr_assert_eq(system(command), 0);
}

/* Replace the harness's LUN by one over the same disk saving into the store in directory (reopened). */
static void restart_lun(void)
{
    scsi_lun_destroy(lun);
    lun = NULL;
    scsi_persist_store_close(store);
    store = NULL;
    char *message = NULL;
    cr_assert_eq(scsi_persist_store_open(directory, &store, &message), 0, "%s", message ? message : "");
    struct scsi_lun_options options = {.bdev = bdev, .serial = "SN42", .persist = store, .persist_key = KEY};
    cr_assert_eq(scsi_lun_create(&options, &lun), 0);
}

static uint8_t pr_out(const char *nexus, uint8_t action, uint8_t type, uint64_t key, uint64_t service_key,
                      bool aptpl)
{
    uint8_t cdb[10] = {0x5f, action, type};
    store_be32(cdb + 5, 24);
    uint8_t parameters[24] = {0};
    store_be64(parameters, key);
    store_be64(parameters + 8, service_key);
    parameters[20] = aptpl ? 0x01 : 0;
    return run(cdb, 10, parameters, sizeof(parameters), nexus).status;
}

/* PERSISTENT RESERVE IN into data_in. */
static void pr_in(const char *nexus, uint8_t action)
{
    uint8_t cdb[10] = {0x5e, action};
    store_be16(cdb + 7, 1024);
    struct scsi_task task = run(cdb, 10, NULL, 0, nexus);
    cr_assert_eq(task.status, SCSI_STATUS_GOOD);
}

static bool state_file_exists(void)
{
    char file[128];
    snprintf(file, sizeof(file), "%s/%s", directory, FILE_NAME);
    struct stat st;
    return stat(file, &st) == 0;
}

TestSuite(scsi_persist, .init = setup_store, .fini = teardown_store);

Test(scsi_persist, reservations_survive_a_restart)
{
    restart_lun();
    attend(A);
    attend(B);
    pr_in(A, 2);
    cr_assert_eq(data_in[2] & 0x01, 0x01, "PTPL_C: APTPL offered");
    cr_assert_eq(data_in[3] & 0x01, 0x00, "PTPL_A: not yet activated");
    cr_assert_eq(pr_out(A, 0, 0, 0, 0xaa, true), SCSI_STATUS_GOOD, "REGISTER with APTPL");
    cr_assert(state_file_exists(), "saved before the answer");
    cr_assert_eq(pr_out(B, 0, 0, 0, 0xbb, false), SCSI_STATUS_GOOD, "B registers without APTPL");
    cr_assert_not(state_file_exists(), "B's REGISTER with APTPL 0 was the last valid bit");
    cr_assert_eq(pr_out(B, 6, 0, 0, 0xbb, true), SCSI_STATUS_GOOD, "REGISTER AND IGNORE EXISTING KEY, APTPL 1");
    cr_assert_eq(pr_out(A, 1, 1, 0xaa, 0, false), SCSI_STATUS_GOOD, "RESERVE write exclusive (APTPL ignored)");
    cr_assert(state_file_exists());
    pr_in(A, 2);
    cr_assert_eq(data_in[3] & 0x01, 0x01, "PTPL_A");
    pr_in(A, 0);
    uint32_t generation = load_be32(data_in);

    restart_lun(); /* as a restart of lunad: a new store read from the directory, a new LUN */
    attend(A);
    attend(B);
    cr_assert_eq(pr_out(B, 1, 1, 0xbb, 0, false), SCSI_STATUS_RESERVATION_CONFLICT, "A still holds it");
    uint8_t write_cdb[10] = {0x2a};
    store_be16(write_cdb + 7, 1);
    uint8_t block[BLOCK] = {0};
    cr_assert_eq(run(write_cdb, 10, block, sizeof(block), B).status, SCSI_STATUS_RESERVATION_CONFLICT);
    cr_assert_eq(run(write_cdb, 10, block, sizeof(block), A).status, SCSI_STATUS_GOOD);
    pr_in(B, 0);
    cr_assert_eq(load_be32(data_in), generation, "the generation goes on");
    cr_assert_eq(load_be32(data_in + 4), 16, "both keys");
    pr_in(B, 1);
    cr_assert_eq(load_be64(data_in + 8), 0xaa, "A's reservation");
    cr_assert_eq(data_in[8 + 13], 1, "write exclusive");
    pr_in(B, 2);
    cr_assert_eq(data_in[3] & 0x01, 0x01, "still activated");

    cr_assert_eq(pr_out(A, 3, 0, 0xaa, 0, false), SCSI_STATUS_GOOD, "CLEAR (APTPL stays on)");
    restart_lun();
    attend(B);
    pr_in(B, 0);
    cr_assert_eq(load_be32(data_in + 4), 0, "cleared for good");
}

Test(scsi_persist, refused_without_a_store)
{
    attend(A);
    uint8_t cdb[10] = {0x5f, 0};
    store_be32(cdb + 5, 24);
    uint8_t parameters[24] = {0};
    store_be64(parameters + 8, 0xaa);
    parameters[20] = 0x01;
    struct scsi_task task = run(cdb, 10, parameters, sizeof(parameters), A);
    expect_sense(&task, 0x05, 0x26, 0x00);
    pr_in(A, 2);
    cr_assert_eq(data_in[2] & 0x01, 0, "PTPL_C is 0");
}

static void write_state(const char *name, const char *text)
{
    char file[256];
    snprintf(file, sizeof(file), "%s/%s", directory, name);
    FILE *out = fopen(file, "w");
    cr_assert_not_null(out);
    fputs(text, out);
    cr_assert_eq(fclose(out), 0);
}

static void expect_open_error(const char *expected)
{
    char *message = NULL;
    struct scsi_persist_store *refused = NULL;
    cr_assert_lt(scsi_persist_store_open(directory, &refused, &message), 0);
    cr_assert_null(refused);
    cr_assert_not_null(message);
    cr_assert_not_null(strstr(message, expected), "'%s' should say '%s'", message, expected);
    free(message);
}

Test(scsi_persist, malformed_files_are_named)
{
    write_state(FILE_NAME, "generation 3\nregistration 0x0 " A "\n");
    expect_open_error(FILE_NAME ":2: expected 'registration 0xKEY NEXUS' with a non-zero key");
    write_state(FILE_NAME, "generation 3\nregistration 0xaa " A "\nreservation 1 " B "\n");
    expect_open_error(FILE_NAME ": the reservation holder is not registered");
    write_state(FILE_NAME, "generation 3\nregistration 0xaa " A "\nreservation 2 " A "\n");
    expect_open_error(FILE_NAME ":3: expected one 'reservation TYPE NEXUS'");
    write_state(FILE_NAME, "what\n");
    expect_open_error(FILE_NAME ":1: unknown record");
    write_state(FILE_NAME, "# a comment\n\ngeneration 3\nregistration 0xaa " A "\nreservation 1 " A "\n");
    write_state(FILE_NAME ".tmp", "junk a crash left\n");
    restart_lun(); /* a good file, and a temporary one ignored */
    attend(B);
    pr_in(B, 1);
    cr_assert_eq(load_be64(data_in + 8), 0xaa);
    write_state("bad%zz", "generation 1\n");
    expect_open_error("bad%zz: not a reservation state file");
}
