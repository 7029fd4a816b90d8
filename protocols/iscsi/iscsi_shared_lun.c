/*
 * The SCSI LUN objects behind iSCSI LUNs, shared by every session that
 * reaches the same export through the same target and LUN number: a
 * LUN's reservations, unit attentions and COMPARE AND WRITE ordering are
 * the LUN's, not a session's.  Sessions live on different worker threads,
 * so the table has a mutex; the SCSI LUN guards its own state.  Each entry
 * holds a reference to the export, whose bdev the LUN uses.  A LUN whose
 * last session leaves stays while it holds persistent reservations: they
 * belong to the initiators, who find them again when they come back.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "block/export.h"
#include "protocols/iscsi/iscsi_internal.h"

struct shared_lun {
    struct shared_lun *next;
    struct export *export;
    char *iqn;
    uint64_t number;
    struct scsi_lun *scsi;
    unsigned users;
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shared_lun *table;

static void entry_free(struct shared_lun *entry)
{
    if (!entry)
        return;
    scsi_lun_destroy(entry->scsi);
    export_unref(entry->export);
    free(entry->iqn);
    free(entry);
}

int iscsi_shared_lun_get(struct export *export, const char *iqn, uint64_t number,
                         const struct scsi_lun_options *options, struct scsi_lun **out)
{
    pthread_mutex_lock(&table_lock);
    struct shared_lun *entry = table;
    while (entry && !(entry->export == export && entry->number == number && strcmp(entry->iqn, iqn) == 0))
        entry = entry->next;
    int ret = 0;
    if (!entry) {
        entry = calloc(1, sizeof(*entry));
        if (entry && (entry->iqn = strdup(iqn)) && (ret = scsi_lun_create(options, &entry->scsi)) == 0) {
            entry->export = export_ref(export);
            entry->number = number;
            entry->next = table;
            table = entry;
        } else {
            if (entry)
                free(entry->iqn);
            free(entry);
            entry = NULL;
            ret = ret < 0 ? ret : -ENOMEM;
        }
    }
    if (entry) {
        entry->users++;
        *out = entry->scsi;
    }
    pthread_mutex_unlock(&table_lock);
    return ret;
}

void iscsi_shared_lun_put(struct scsi_lun *scsi)
{
    if (!scsi)
        return;
    struct shared_lun *gone = NULL;
    pthread_mutex_lock(&table_lock);
    for (struct shared_lun **link = &table; *link; link = &(*link)->next) {
        if ((*link)->scsi == scsi) {
            if (--(*link)->users == 0 && !scsi_lun_has_reservations(scsi)) {
                gone = *link;
                *link = gone->next;
            }
            break;
        }
    }
    pthread_mutex_unlock(&table_lock);
    entry_free(gone);
}

void iscsi_shared_luns_release(void)
{
    pthread_mutex_lock(&table_lock);
    struct shared_lun *entries = table;
    table = NULL;
    pthread_mutex_unlock(&table_lock);
    while (entries) {
        struct shared_lun *entry = entries;
        entries = entry->next;
        entry_free(entry);
    }
}
