/*
 * The command table: every CDB the core runs, with what REPORT SUPPORTED
 * OPERATION CODES says of it (its length and CDB usage data), so the list
 * an initiator reads is the list that dispatches.
 *
 * Usage data (SPC-4): byte 0 the opcode, the service action in its field,
 * then a one for each bit the command's code evaluates.  Fields read but
 * only accepted (DPO, IMMED) count as evaluated: the device honours them
 * (MODE SENSE's DPOFUA says so for DPO and FUA).  The GROUP NUMBER fields
 * and the CONTROL byte are ignored: zero.
 */
#include "protocols/scsi/scsi_internal.h"

#define LBA4 0xff, 0xff, 0xff, 0xff
#define LBA8 LBA4, LBA4
#define LEN2 0xff, 0xff
#define LEN4 0xff, 0xff, 0xff, 0xff

/* Byte 1 of the block commands. */
#define PROTECT_DPO_FUA 0xf8     /* RDPROTECT / WRPROTECT (refused when set), DPO, FUA */
#define PROTECT_DPO_BYTCHK 0xf6  /* VRPROTECT / WRPROTECT, DPO, BYTCHK */

const struct scsi_command scsi_commands[] = {
    {.opcode = 0x00, .access = SCSI_ACCESS_STATUS, .cdb_length = 6, .run = scsi_test_unit_ready, /* TEST UNIT READY */
     .usage = {0x00, 0, 0, 0, 0, 0}},
    {.opcode = 0x03, .access = SCSI_ACCESS_ANY, .cdb_length = 6, .run = scsi_request_sense, .without_attention = true, /* REQUEST SENSE */
     .usage = {0x03, 0x01 /* DESC */, 0, 0, 0xff, 0}},
    {.opcode = 0x08, .access = SCSI_ACCESS_READ, .cdb_length = 6, .run = scsi_read_write, /* READ(6) */
     .usage = {0x08, 0x1f, 0xff, 0xff, 0xff, 0}},
    {.opcode = 0x0a, .cdb_length = 6, .run = scsi_read_write, /* WRITE(6) */
     .usage = {0x0a, 0x1f, 0xff, 0xff, 0xff, 0}},
    {.opcode = 0x12, .access = SCSI_ACCESS_ANY, .cdb_length = 6, .run = scsi_inquiry, .without_attention = true, /* INQUIRY */
     .usage = {0x12, 0x01 /* EVPD */, 0xff, LEN2, 0}},
    {.opcode = 0x15, .cdb_length = 6, .run = scsi_mode_select, /* MODE SELECT(6) */
     .usage = {0x15, 0x11 /* PF, SP */, 0, 0, 0xff, 0}},
    {.opcode = 0x16, .access = SCSI_ACCESS_ANY, .cdb_length = 6, .run = scsi_reserve, /* RESERVE(6) */
     .usage = {0x16, 0, 0, 0, 0, 0}},
    {.opcode = 0x17, .access = SCSI_ACCESS_ANY, .cdb_length = 6, .run = scsi_release, /* RELEASE(6) */
     .usage = {0x17, 0, 0, 0, 0, 0}},
    {.opcode = 0x1a, .access = SCSI_ACCESS_READ, .cdb_length = 6, .run = scsi_mode_sense, /* MODE SENSE(6) */
     .usage = {0x1a, 0x08 /* DBD */, 0xff, 0xff, 0xff, 0}},
    {.opcode = 0x1b, .access = SCSI_ACCESS_STATUS, .cdb_length = 6, .run = scsi_accepted, /* START STOP UNIT */
     .usage = {0x1b, 0, 0, 0, 0, 0}},
    {.opcode = 0x1e, .access = SCSI_ACCESS_STATUS, .cdb_length = 6, .run = scsi_accepted, /* PREVENT ALLOW MEDIUM REMOVAL */
     .usage = {0x1e, 0, 0, 0, 0, 0}},
    {.opcode = 0x25, .access = SCSI_ACCESS_STATUS, .cdb_length = 10, .run = scsi_read_capacity10, /* READ CAPACITY(10) */
     .usage = {0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
    {.opcode = 0x28, .access = SCSI_ACCESS_READ, .cdb_length = 10, .run = scsi_read_write, /* READ(10) */
     .usage = {0x28, PROTECT_DPO_FUA, LBA4, 0, LEN2, 0}},
    {.opcode = 0x2a, .cdb_length = 10, .run = scsi_read_write, /* WRITE(10) */
     .usage = {0x2a, PROTECT_DPO_FUA, LBA4, 0, LEN2, 0}},
    {.opcode = 0x2e, .cdb_length = 10, .run = scsi_write_and_verify, /* WRITE AND VERIFY(10) */
     .usage = {0x2e, PROTECT_DPO_BYTCHK, LBA4, 0, LEN2, 0}},
    {.opcode = 0x2f, .access = SCSI_ACCESS_READ, .cdb_length = 10, .run = scsi_verify, /* VERIFY(10) */
     .usage = {0x2f, PROTECT_DPO_BYTCHK, LBA4, 0, LEN2, 0}},
    {.opcode = 0x34, .access = SCSI_ACCESS_READ, .cdb_length = 10, .run = scsi_prefetch, /* PRE-FETCH(10) */
     .usage = {0x34, 0x02 /* IMMED */, LBA4, 0, LEN2, 0}},
    {.opcode = 0x35, .cdb_length = 10, .run = scsi_synchronize_cache, /* SYNCHRONIZE CACHE(10): all of it */
     .usage = {0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
    {.opcode = 0x37, .access = SCSI_ACCESS_READ, .cdb_length = 10, .run = scsi_read_defect_data, /* READ DEFECT */
     .usage = {0x37, 0, 0x1f /* REQ_PLIST, REQ_GLIST, FORMAT */, 0, 0, 0, 0, LEN2, 0}},            /* DATA(10) */
    {.opcode = 0x41, .cdb_length = 10, .run = scsi_write_same, /* WRITE SAME(10) */
     .usage = {0x41, 0xf8 /* WRPROTECT, ANCHOR, UNMAP */, LBA4, 0, LEN2, 0}},
    {.opcode = 0x42, .cdb_length = 10, .run = scsi_unmap, /* UNMAP */
     .usage = {0x42, 0x01 /* ANCHOR */, 0, 0, 0, 0, 0, LEN2, 0}},
    {.opcode = 0x55, .cdb_length = 10, .run = scsi_mode_select, /* MODE SELECT(10) */
     .usage = {0x55, 0x11 /* PF, SP */, 0, 0, 0, 0, 0, LEN2, 0}},
    {.opcode = 0x56, .access = SCSI_ACCESS_ANY, .cdb_length = 10, .run = scsi_reserve, /* RESERVE(10) */
     .usage = {0x56, 0x02 /* 3RDPTY (refused) */, 0, 0, 0, 0, 0, 0, 0, 0}},
    {.opcode = 0x57, .access = SCSI_ACCESS_ANY, .cdb_length = 10, .run = scsi_release, /* RELEASE(10) */
     .usage = {0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
    {.opcode = 0x5a, .access = SCSI_ACCESS_READ, .cdb_length = 10, .run = scsi_mode_sense, /* MODE SENSE(10) */
     .usage = {0x5a, 0x08 /* DBD */, 0xff, 0xff, 0, 0, 0, LEN2, 0}},
    {.opcode = 0x5e, .access = SCSI_ACCESS_ANY, .cdb_length = 10, .run = scsi_persistent_reserve_in, /* PERSISTENT */
     .usage = {0x5e, 0x1f /* SERVICE ACTION */, 0, 0, 0, 0, 0, LEN2, 0}},                              /* RESERVE IN */
    {.opcode = 0x5f, .access = SCSI_ACCESS_ANY, .cdb_length = 10, .run = scsi_persistent_reserve_out, /* PERSISTENT */
     .usage = {0x5f, 0x1f /* SERVICE ACTION */, 0xff /* SCOPE, TYPE */, 0, 0, LEN4, 0}},         /* RESERVE OUT */
    {.opcode = 0x83, .service_action = 0x00, .has_service_action = true, .cdb_length = 16, /* EXTENDED COPY(LID1) */
     .run = scsi_extended_copy, .usage = {0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, LEN4, 0, 0}},
    {.opcode = 0x84, .access = SCSI_ACCESS_ANY, .service_action = 0x00, .has_service_action = true, /* RECEIVE COPY */
     .cdb_length = 16, .run = scsi_receive_copy_results, /* RESULTS: COPY STATUS */
     .usage = {0x84, 0x00, 0xff /* LIST IDENTIFIER */, 0, 0, 0, 0, 0, 0, 0, LEN4, 0, 0}},
    {.opcode = 0x84, .access = SCSI_ACCESS_ANY, .service_action = 0x03, .has_service_action = true, /* RECEIVE COPY */
     .cdb_length = 16, .run = scsi_receive_copy_results, /* RESULTS: OPERATING PARAMETERS */
     .usage = {0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, LEN4, 0, 0}},
    {.opcode = 0x88, .access = SCSI_ACCESS_READ, .cdb_length = 16, .run = scsi_read_write, /* READ(16) */
     .usage = {0x88, PROTECT_DPO_FUA, LBA8, LEN4, 0, 0}},
    {.opcode = 0x89, .cdb_length = 16, .run = scsi_compare_and_write, /* COMPARE AND WRITE */
     .usage = {0x89, PROTECT_DPO_FUA, LBA8, 0, 0, 0, 0xff, 0, 0}},
    {.opcode = 0x8a, .cdb_length = 16, .run = scsi_read_write, /* WRITE(16) */
     .usage = {0x8a, PROTECT_DPO_FUA, LBA8, LEN4, 0, 0}},
    {.opcode = 0x8b, .cdb_length = 16, .run = scsi_orwrite, /* ORWRITE(16) */
     .usage = {0x8b, PROTECT_DPO_FUA, LBA8, LEN4, 0, 0}},
    {.opcode = 0x8e, .cdb_length = 16, .run = scsi_write_and_verify, /* WRITE AND VERIFY(16) */
     .usage = {0x8e, PROTECT_DPO_BYTCHK, LBA8, LEN4, 0, 0}},
    {.opcode = 0x8f, .access = SCSI_ACCESS_READ, .cdb_length = 16, .run = scsi_verify, /* VERIFY(16) */
     .usage = {0x8f, PROTECT_DPO_BYTCHK, LBA8, LEN4, 0, 0}},
    {.opcode = 0x90, .access = SCSI_ACCESS_READ, .cdb_length = 16, .run = scsi_prefetch, /* PRE-FETCH(16) */
     .usage = {0x90, 0x02 /* IMMED */, LBA8, LEN4, 0, 0}},
    {.opcode = 0x91, .cdb_length = 16, .run = scsi_synchronize_cache, /* SYNCHRONIZE CACHE(16): all of it */
     .usage = {0x91, 0}},
    {.opcode = 0x93, .cdb_length = 16, .run = scsi_write_same, /* WRITE SAME(16) */
     .usage = {0x93, 0xf9 /* WRPROTECT, ANCHOR, UNMAP, NDOB */, LBA8, LEN4, 0, 0}},
    {.opcode = 0x9e, .access = SCSI_ACCESS_STATUS, .service_action = 0x10, .has_service_action = true, .cdb_length = 16, /* READ CAPACITY(16) */
     .run = scsi_read_capacity16, .usage = {0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, LEN4, 0, 0}},
    {.opcode = 0x9e, .access = SCSI_ACCESS_READ, .service_action = 0x12, .has_service_action = true, .cdb_length = 16, /* GET LBA STATUS */
     .run = scsi_get_lba_status, .usage = {0x9e, 0x12, LBA8, LEN4, 0, 0}},
    {.opcode = 0xa0, .access = SCSI_ACCESS_ANY, .cdb_length = 12, .run = scsi_report_luns, .without_attention = true, /* REPORT LUNS */
     .usage = {0xa0, 0, 0, 0, 0, 0, LEN4, 0, 0}},
    {.opcode = 0xa3, .access = SCSI_ACCESS_ANY, .service_action = 0x0c, .has_service_action = true, .cdb_length = 12, /* REPORT SUPPORTED */
     .run = scsi_report_supported_opcodes,                                                /* OPERATION CODES */
     .usage = {0xa3, 0x0c, 0x87 /* RCTD, REPORTING OPTIONS */, 0xff, LEN2, LEN4, 0, 0}},
    {.opcode = 0xa8, .access = SCSI_ACCESS_READ, .cdb_length = 12, .run = scsi_read_write, /* READ(12) */
     .usage = {0xa8, PROTECT_DPO_FUA, LBA4, LEN4, 0, 0}},
    {.opcode = 0xaa, .cdb_length = 12, .run = scsi_read_write, /* WRITE(12) */
     .usage = {0xaa, PROTECT_DPO_FUA, LBA4, LEN4, 0, 0}},
    {.opcode = 0xae, .cdb_length = 12, .run = scsi_write_and_verify, /* WRITE AND VERIFY(12) */
     .usage = {0xae, PROTECT_DPO_BYTCHK, LBA4, LEN4, 0, 0}},
    {.opcode = 0xaf, .access = SCSI_ACCESS_READ, .cdb_length = 12, .run = scsi_verify, /* VERIFY(12) */
     .usage = {0xaf, PROTECT_DPO_BYTCHK, LBA4, LEN4, 0, 0}},
    {.opcode = 0xb7, .access = SCSI_ACCESS_READ, .cdb_length = 12, .run = scsi_read_defect_data, /* READ DEFECT */
     .usage = {0xb7, 0x1f /* REQ_PLIST, REQ_GLIST, FORMAT */, 0, 0, 0, 0, LEN4, 0, 0}},             /* DATA(12) */
};

const size_t scsi_command_count = sizeof(scsi_commands) / sizeof(scsi_commands[0]);
