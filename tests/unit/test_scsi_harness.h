/*
 * Shared by the SCSI core's tests: a LUN over a real raw-file bdev (8 MiB
 * of 512-byte blocks filled with pattern_byte) on a real loop, and CDBs
 * run to completion against it.
 */
#ifndef LUNA_TESTS_TEST_SCSI_HARNESS_H
#define LUNA_TESTS_TEST_SCSI_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocols/scsi/scsi.h"
#include "test_block_util.h"

#define DISK (8u << 20)
#define BLOCK 512u

extern struct test_loop loop;
extern char *path;
extern struct bdev *bdev;
extern struct scsi_lun *lun;
extern uint8_t data_in[1 << 20];

/* Criterion init / fini: a writable LUN, a read-only one. */
void setup(void);
void setup_readonly(void);
void teardown(void);

/* A task for cdb (as nexus "init" unless given), not yet executed; complete() counts into *completions. */
struct scsi_task task_for(const uint8_t *cdb, size_t cdb_length, const void *out, size_t out_length,
                          const char *nexus);
void task_count_completions(struct scsi_task *task, int *completions);

/* Run cdb and wait for its completion (asserted to happen exactly once). */
struct scsi_task run(const uint8_t *cdb, size_t cdb_length, const void *out, size_t out_length, const char *nexus);

/* The first command of a nexus gets the power-on unit attention: take it. */
void attend(const char *nexus);

void expect_sense(const struct scsi_task *task, uint8_t key, uint8_t asc, uint8_t ascq);

#endif
