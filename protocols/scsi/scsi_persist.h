/*
 * scsi_persist: persistent reservations that survive a restart (SPC-4
 * §5.12.5, "activate persist through power loss", APTPL).
 *
 * A directory holds one small text file per LUN whose initiators asked
 * for APTPL, named after the LUN's key (the transport's name for it: for
 * iSCSI target, LUN number and export).  The store reads them all when it
 * opens, at start-up, before any event loop runs; LUNs created later start
 * from that copy, with no file I/O.  A LUN saves its reservations whenever
 * they change, and answers the command only once the file is on stable
 * storage: written to a temporary file, fsynced, renamed over the old one,
 * the directory fsynced, on the thread pool.
 *
 * The file, one record per line:
 *     generation 7
 *     registration 0x1234 iqn.1994-05.com.example:host,i,0x400001370000
 *     reservation 5 iqn.1994-05.com.example:host,i,0x400001370000
 */
#ifndef LUNA_PROTOCOLS_SCSI_SCSI_PERSIST_H
#define LUNA_PROTOCOLS_SCSI_SCSI_PERSIST_H

struct scsi_persist_store;

/*
 * Create directory if needed and read every state file in it.  Blocking:
 * start-up only.  On failure -errno and a malloc'd message naming the
 * file (and line, for a malformed one).
 */
int scsi_persist_store_open(const char *directory, struct scsi_persist_store **out, char **error_message);

/* After every LUN using the store is gone. */
void scsi_persist_store_close(struct scsi_persist_store *store);

#endif
