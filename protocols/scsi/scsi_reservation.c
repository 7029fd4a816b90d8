/*
 * Reservations: persistent reservations (SPC-4 §5.12, PERSISTENT RESERVE
 * IN / OUT) and the older RESERVE / RELEASE (6) and (10) (SPC-2), kept per
 * LUN and shared by every I_T nexus that uses the LUN (so the transport
 * must hand all of them the same LUN object).  Nexuses are the transport's
 * initiator port names (iSCSI: "IQN,i,0xISID"), which READ FULL STATUS
 * reports as iSCSI TransportIDs.
 *
 * The conflict check runs before every command: who may read or write
 * follows SPC-4's table for the reservation type.  State changes happen
 * under the LUN's mutex.  With APTPL (offered when the LUN has a store,
 * scsi_persist.h) every change is saved before the command is answered.
 * Not offered: SPEC_I_PT, ALL_TG_PT (one target port) and REGISTER AND
 * MOVE.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/scsi/scsi_internal.h"

enum {
    PR_WRITE_EXCLUSIVE = 1,
    PR_EXCLUSIVE_ACCESS = 3,
    PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 5,
    PR_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 6,
    PR_WRITE_EXCLUSIVE_ALL_REGISTRANTS = 7,
    PR_EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 8,
};

enum {
    PR_OUT_REGISTER = 0,
    PR_OUT_RESERVE = 1,
    PR_OUT_RELEASE = 2,
    PR_OUT_CLEAR = 3,
    PR_OUT_PREEMPT = 4,
    PR_OUT_PREEMPT_AND_ABORT = 5,
    PR_OUT_REGISTER_AND_IGNORE = 6,
};

#define PR_OUT_PARAMETERS 24

static bool valid_type(uint8_t type)
{
    return type == PR_WRITE_EXCLUSIVE || type == PR_EXCLUSIVE_ACCESS || type == PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY ||
           type == PR_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY || type == PR_WRITE_EXCLUSIVE_ALL_REGISTRANTS ||
           type == PR_EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
}

static bool all_registrants(uint8_t type)
{
    return type == PR_WRITE_EXCLUSIVE_ALL_REGISTRANTS || type == PR_EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
}

/* ---- the registrations (under lun->lock) ---- */

static struct scsi_registration *find(struct scsi_lun *lun, const char *nexus)
{
    for (size_t i = 0; i < lun->registration_count; i++)
        if (strcmp(lun->registrations[i].nexus, nexus) == 0)
            return &lun->registrations[i];
    return NULL;
}

/* Is nexus a reservation holder?  For the all-registrants types every registrant is. */
static bool holds(struct scsi_lun *lun, const char *nexus)
{
    if (!lun->reserved)
        return false;
    if (all_registrants(lun->reservation_type))
        return find(lun, nexus) != NULL;
    return strcmp(lun->reservation_holder, nexus) == 0;
}

static void release_reservation(struct scsi_lun *lun)
{
    lun->reserved = false;
    lun->reservation_type = 0;
    lun->reservation_holder[0] = '\0';
}

static bool registrants_only(uint8_t type)
{
    return type == PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY || type == PR_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY;
}

/* Every registrant but nexus is owed attention (SPC-4 §5.12.11: clear, release, preempt). */
static void tell_other_registrants(struct scsi_lun *lun, const char *nexus, enum scsi_attention attention)
{
    for (size_t i = 0; i < lun->registration_count; i++)
        if (strcmp(lun->registrations[i].nexus, nexus) != 0)
            scsi_attention_raise(lun, lun->registrations[i].nexus, attention);
}

static void unregister(struct scsi_lun *lun, struct scsi_registration *registration)
{
    bool holder = lun->reserved && !all_registrants(lun->reservation_type) &&
                  strcmp(lun->reservation_holder, registration->nexus) == 0;
    char *nexus = registration->nexus;
    *registration = lun->registrations[--lun->registration_count];
    /* The holder's reservation goes with it; an all-registrants one with the last registrant. */
    if (holder || (lun->reserved && all_registrants(lun->reservation_type) && lun->registration_count == 0)) {
        /* A registrants-only reservation's registrants lose their access with it (SPC-4 §5.12.11.2.2). */
        if (registrants_only(lun->reservation_type))
            tell_other_registrants(lun, nexus, SCSI_ATTENTION_RESERVATIONS_RELEASED);
        release_reservation(lun);
    }
    free(nexus);
}

void scsi_reservations_clear(struct scsi_lun *lun)
{
    for (size_t i = 0; i < lun->registration_count; i++)
        free(lun->registrations[i].nexus);
    lun->registration_count = 0;
    release_reservation(lun);
    free(lun->legacy_holder);
    lun->legacy_holder = NULL;
}

/* ---- the conflict check ---- */

void scsi_reservations_changed(struct scsi_lun *lun)
{
    atomic_store_explicit(&lun->restricted, lun->reserved || lun->legacy_holder, memory_order_release);
}

bool scsi_reservation_conflict(struct scsi_lun *lun, const char *nexus, enum scsi_access access)
{
    if (access == SCSI_ACCESS_ANY || !nexus || !atomic_load_explicit(&lun->restricted, memory_order_acquire))
        return false;
    pthread_mutex_lock(&lun->lock);
    bool conflict = false;
    if (lun->legacy_holder) {
        conflict = strcmp(lun->legacy_holder, nexus) != 0;
    } else if (lun->reserved && access != SCSI_ACCESS_STATUS && !holds(lun, nexus)) {
        bool registered = find(lun, nexus) != NULL;
        switch (lun->reservation_type) {
        case PR_WRITE_EXCLUSIVE: conflict = access == SCSI_ACCESS_WRITE; break;
        case PR_EXCLUSIVE_ACCESS: conflict = true; break;
        case PR_WRITE_EXCLUSIVE_REGISTRANTS_ONLY:
        case PR_WRITE_EXCLUSIVE_ALL_REGISTRANTS: conflict = !registered && access == SCSI_ACCESS_WRITE; break;
        default: conflict = !registered; break; /* the exclusive access registrants types */
        }
    }
    pthread_mutex_unlock(&lun->lock);
    return conflict;
}

/* ---- RESERVE / RELEASE (6) and (10) ---- */

void scsi_reserve(struct scsi_task *task)
{
    struct scsi_lun *lun = task->lun;
    if (task->cdb[0] == 0x56 && (task->cdb[1] & 0x02)) { /* RESERVE(10) third-party: not offered */
        scsi_task_invalid_field(task, 1, 1);
        return;
    }
    pthread_mutex_lock(&lun->lock);
    bool conflict = lun->registration_count > 0 || lun->reserved ||
                    (lun->legacy_holder && strcmp(lun->legacy_holder, task->nexus) != 0);
    bool failed = false;
    if (!conflict && !lun->legacy_holder)
        failed = !(lun->legacy_holder = strdup(task->nexus));
    scsi_reservations_changed(lun);
    pthread_mutex_unlock(&lun->lock);
    if (conflict)
        scsi_task_conflict(task);
    else if (failed)
        scsi_task_errno(task, -ENOMEM, false);
    else
        scsi_task_good(task, 0);
}

void scsi_release(struct scsi_task *task)
{
    struct scsi_lun *lun = task->lun;
    pthread_mutex_lock(&lun->lock);
    bool conflict = lun->reserved || lun->registration_count > 0;
    /* Releasing someone else's reservation, or none, does nothing (SPC-2). */
    if (!conflict && lun->legacy_holder && strcmp(lun->legacy_holder, task->nexus) == 0) {
        free(lun->legacy_holder);
        lun->legacy_holder = NULL;
    }
    scsi_reservations_changed(lun);
    pthread_mutex_unlock(&lun->lock);
    if (conflict)
        scsi_task_conflict(task);
    else
        scsi_task_good(task, 0);
}

/* ---- PERSISTENT RESERVE IN ---- */

static size_t read_keys(struct scsi_lun *lun, uint8_t *out, size_t room)
{
    store_be32(out, lun->generation);
    size_t at = 8;
    for (size_t i = 0; i < lun->registration_count && at + 8 <= room; i++, at += 8)
        store_be64(out + at, lun->registrations[i].key);
    store_be32(out + 4, (uint32_t)(8 * lun->registration_count));
    return 8 + 8 * lun->registration_count;
}

static size_t read_reservation(struct scsi_lun *lun, uint8_t *out)
{
    store_be32(out, lun->generation);
    if (!lun->reserved) {
        store_be32(out + 4, 0);
        return 8;
    }
    store_be32(out + 4, 16);
    /* An all-registrants reservation's key is zero (SPC-4 §6.15.3). */
    uint64_t key = 0;
    if (!all_registrants(lun->reservation_type)) {
        struct scsi_registration *holder = find(lun, lun->reservation_holder);
        key = holder ? holder->key : 0;
    }
    store_be64(out + 8, key);
    out[8 + 13] = lun->reservation_type; /* scope 0: the logical unit */
    return 24;
}

static size_t report_capabilities(struct scsi_lun *lun, uint8_t *out)
{
    store_be16(out, 8);
    /* CRH: RESERVE / RELEASE succeed as SPC-4 §5.13.3 says while a PR exists; PTPL_C: APTPL offered */
    out[2] = 0x10 | (lun->persist ? 0x01 : 0);
    out[3] = 0x80 | 0x10 | (lun->aptpl ? 0x01 : 0); /* TMV: the type mask is valid; ALLOW COMMANDS 001; PTPL_A */
    out[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02; /* WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX */
    out[5] = 0x01;          /* EX_AC_AR */
    return 8;
}

/* An iSCSI TransportID (SPC-4 §7.6.4.6, format 01b): "IQN,i,0xISID", NUL-terminated, padded to 4. */
static size_t transport_id(const char *nexus, uint8_t *out, size_t room)
{
    size_t length = strlen(nexus) + 1;
    size_t padded = (length + 3) & ~(size_t)3;
    if (4 + padded > room)
        return 0;
    memset(out, 0, 4 + padded);
    out[0] = 0x40 | 0x05; /* format: initiator port; protocol: iSCSI */
    store_be16(out + 2, (uint16_t)padded);
    memcpy(out + 4, nexus, length - 1);
    return 4 + padded;
}

static size_t read_full_status(struct scsi_lun *lun, uint8_t *out, size_t room)
{
    store_be32(out, lun->generation);
    size_t at = 8;
    for (size_t i = 0; i < lun->registration_count; i++) {
        const struct scsi_registration *registration = &lun->registrations[i];
        if (at + 24 > room)
            break;
        uint8_t *d = out + at;
        memset(d, 0, 24);
        store_be64(d, registration->key);
        if (holds(lun, registration->nexus)) {
            d[12] = 0x01; /* R_HOLDER */
            d[13] = lun->reservation_type;
        }
        store_be16(d + 18, 1); /* relative target port identifier */
        size_t id = transport_id(registration->nexus, d + 24, room - at - 24);
        store_be32(d + 20, (uint32_t)id);
        at += 24 + id;
    }
    store_be32(out + 4, (uint32_t)(at - 8));
    return at;
}

void scsi_persistent_reserve_in(struct scsi_task *task)
{
    struct scsi_lun *lun = task->lun;
    size_t allocation = load_be16(task->cdb + 7);
    uint8_t answer[8 + SCSI_MAX_REGISTRATIONS * (24 + 260)];
    memset(answer, 0, 8);
    size_t length;
    pthread_mutex_lock(&lun->lock);
    switch (task->cdb[1] & 0x1f) {
    case 0: length = read_keys(lun, answer, sizeof(answer)); break;
    case 1: length = read_reservation(lun, answer); break;
    case 2: length = report_capabilities(lun, answer); break;
    case 3: length = read_full_status(lun, answer, sizeof(answer)); break;
    default: length = 0; break;
    }
    pthread_mutex_unlock(&lun->lock);
    if ((task->cdb[1] & 0x1f) > 3) {
        scsi_task_invalid_field(task, 1, 4);
        return;
    }
    if (length > sizeof(answer))
        length = sizeof(answer); /* READ KEYS reports every key's length, sends what fits */
    scsi_task_reply(task, answer, allocation < length ? allocation : length);
}

/* ---- PERSISTENT RESERVE OUT ---- */

struct pr_out {
    uint64_t key, service_key;
    uint8_t type, scope;
    bool aptpl;
};

/*
 * One service action against the LUN's state, under its lock.  0 (GOOD),
 * 1 (RESERVATION CONFLICT), or a negative errno; on -EINVAL *asc / *ascq
 * name what was invalid.
 */
static int pr_out(struct scsi_lun *lun, const char *nexus, unsigned action, const struct pr_out *out,
                  uint8_t *asc, uint8_t *ascq)
{
    struct scsi_registration *registration = find(lun, nexus);
    switch (action) {
    case PR_OUT_REGISTER:
    case PR_OUT_REGISTER_AND_IGNORE:
        if (action == PR_OUT_REGISTER && (registration ? registration->key != out->key : out->key != 0))
            return 1;
        if (!registration) {
            if (out->service_key == 0)
                return 0;
            if (lun->registration_count == SCSI_MAX_REGISTRATIONS) {
                *asc = 0x55;
                *ascq = 0x04;
                return -ENOSPC;
            }
            char *copy = strdup(nexus);
            struct scsi_registration *grown =
                realloc(lun->registrations, (lun->registration_count + 1) * sizeof(*grown));
            if (!copy || !grown) {
                free(copy);
                if (grown)
                    lun->registrations = grown;
                return -ENOMEM;
            }
            lun->registrations = grown;
            lun->registrations[lun->registration_count++] = (struct scsi_registration){.nexus = copy,
                                                                                      .key = out->service_key};
        } else if (out->service_key == 0) {
            unregister(lun, registration);
        } else {
            registration->key = out->service_key;
        }
        lun->generation++;
        return 0;
    default:
        break;
    }
    /* Every other service action needs a registration with the key given. */
    if (!registration || registration->key != out->key)
        return 1;
    switch (action) {
    case PR_OUT_RESERVE:
        if (lun->reserved) {
            if (!holds(lun, nexus))
                return 1;
            return lun->reservation_type == out->type ? 0 : 1;
        }
        lun->reserved = true;
        lun->reservation_type = out->type;
        snprintf(lun->reservation_holder, sizeof(lun->reservation_holder), "%s", nexus);
        return 0;
    case PR_OUT_RELEASE:
        if (!lun->reserved || !holds(lun, nexus))
            return 0;
        if (lun->reservation_type != out->type) {
            *asc = 0x26;
            *ascq = 0x04; /* INVALID RELEASE OF PERSISTENT RESERVATION */
            return -EINVAL;
        }
        if (registrants_only(lun->reservation_type) || all_registrants(lun->reservation_type))
            tell_other_registrants(lun, nexus, SCSI_ATTENTION_RESERVATIONS_RELEASED);
        release_reservation(lun);
        return 0;
    case PR_OUT_CLEAR:
        tell_other_registrants(lun, nexus, SCSI_ATTENTION_RESERVATIONS_PREEMPTED);
        for (size_t i = 0; i < lun->registration_count; i++)
            free(lun->registrations[i].nexus);
        lun->registration_count = 0;
        release_reservation(lun);
        lun->generation++;
        return 0;
    default: { /* PREEMPT, PREEMPT AND ABORT */
        bool holder_preempted = false;
        if (lun->reserved && all_registrants(lun->reservation_type) && out->service_key == 0) {
            holder_preempted = true; /* every other registrant goes, the reservation is taken over */
        } else if (out->service_key == 0) {
            *asc = 0x26;
            *ascq = 0x00; /* INVALID FIELD IN PARAMETER LIST */
            return -EINVAL;
        } else if (lun->reserved && !all_registrants(lun->reservation_type)) {
            struct scsi_registration *holder = find(lun, lun->reservation_holder);
            holder_preempted = holder && holder->key == out->service_key;
        }
        size_t removed = 0;
        for (size_t i = 0; i < lun->registration_count;) {
            struct scsi_registration *r = &lun->registrations[i];
            bool goes = strcmp(r->nexus, nexus) != 0 && (out->service_key == 0 || r->key == out->service_key);
            if (goes) {
                scsi_attention_raise(lun, r->nexus, SCSI_ATTENTION_REGISTRATIONS_PREEMPTED);
                free(r->nexus);
                *r = lun->registrations[--lun->registration_count];
                removed++;
            } else {
                i++;
            }
        }
        if (holder_preempted) {
            lun->reserved = true;
            lun->reservation_type = out->type;
            snprintf(lun->reservation_holder, sizeof(lun->reservation_holder), "%s", nexus);
        } else if (removed == 0) {
            return 1; /* nothing to preempt: the key named no registration */
        }
        lun->generation++;
        return 0;
    }
    }
}

/* The APTPL state file is written (or could not be): the PERSISTENT RESERVE OUT is answered. */
static void reservations_saved(struct scsi_task *task, int result)
{
    if (result < 0)
        scsi_task_errno(task, result, true);
    else
        scsi_task_good(task, 0);
}

void scsi_persistent_reserve_out(struct scsi_task *task)
{
    struct scsi_lun *lun = task->lun;
    unsigned action = task->cdb[1] & 0x1f;
    uint32_t length = load_be32(task->cdb + 5);
    if (action > PR_OUT_REGISTER_AND_IGNORE) {
        scsi_task_invalid_field(task, 1, 4); /* REGISTER AND MOVE and beyond: not offered */
        return;
    }
    if (length != PR_OUT_PARAMETERS || task->data_out_length < PR_OUT_PARAMETERS) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
        return;
    }
    const uint8_t *p = task->data_out;
    struct pr_out out = {.key = load_be64(p), .service_key = load_be64(p + 8), .type = task->cdb[2] & 0x0f,
                         .scope = task->cdb[2] >> 4, .aptpl = p[20] & 0x01};
    if (p[20] & 0x0c) { /* SPEC_I_PT, ALL_TG_PT */
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAMETER_LIST);
        return;
    }
    bool registering = action == PR_OUT_REGISTER || action == PR_OUT_REGISTER_AND_IGNORE;
    if (out.aptpl && registering && !lun->persist) { /* nothing can persist across a restart (PTPL_C is 0) */
        scsi_task_invalid_parameter(task, 20, 0);
        return;
    }
    bool typed = action == PR_OUT_RESERVE || action == PR_OUT_RELEASE || action == PR_OUT_PREEMPT ||
                 action == PR_OUT_PREEMPT_AND_ABORT;
    if (typed && (out.scope != 0 || !valid_type(out.type))) {
        scsi_task_invalid_field(task, 2, out.scope != 0 ? 7 : 3);
        return;
    }
    uint8_t asc = 0, ascq = 0;
    pthread_mutex_lock(&lun->lock);
    int ret = lun->legacy_holder && strcmp(lun->legacy_holder, task->nexus) != 0
                  ? 1 /* an SPC-2 reservation of another nexus blocks persistent ones */
                  : pr_out(lun, task->nexus, action, &out, &asc, &ascq);
    scsi_reservations_changed(lun);
    /* APTPL: the last valid bit (REGISTER's) says whether the state is kept; saved while it is, removed once not. */
    bool save = ret == 0 && lun->persist && (lun->aptpl || (registering && out.aptpl));
    if (ret == 0 && registering && lun->persist)
        lun->aptpl = out.aptpl;
    int saving = 0;
    if (save) {
        /* Under the lock, so the store receives the LUN's states in the order they happened. */
        char *text = lun->aptpl ? scsi_persist_snapshot(lun) : NULL;
        saving = lun->aptpl && !text ? -ENOMEM : scsi_persist_save(lun, text, task, reservations_saved);
    }
    pthread_mutex_unlock(&lun->lock);
    if (save) {
        if (saving < 0)
            scsi_task_errno(task, saving, true);
        return; /* answered once the state is on disk */
    }
    if (ret == 1)
        scsi_task_conflict(task);
    else if (ret == -EINVAL || ret == -ENOSPC)
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, asc, ascq);
    else if (ret < 0)
        scsi_task_errno(task, ret, true);
    else
        scsi_task_good(task, 0);
}
