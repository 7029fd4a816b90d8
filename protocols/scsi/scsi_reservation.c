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
 *
 * REGISTER with SPEC_I_PT (SPC-4 §5.12.7) registers the sender and every
 * initiator port its iSCSI TransportIDs name, all or none; REGISTER AND
 * MOVE (§5.12.8) hands the reservation to the port its TransportID names.
 * A TransportID names a port by its name, which need not be logged in:
 * registrations are by name and outlive sessions.  Not offered: ALL_TG_PT
 * (one target port), TransportIDs of other protocols than iSCSI.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    PR_OUT_REGISTER_AND_MOVE = 7,
};

#define PR_OUT_PARAMETERS 24
#define PR_OUT_SPEC_I_PT_HEADER 28 /* the 24 bytes, then TRANSPORTID PARAMETER DATA LENGTH */
#define PROTOCOL_ISCSI 0x05
/* A nexus name's room, terminator included: the reservation holder's, and what READ FULL STATUS allows each. */
#define NEXUS_MAX sizeof(((struct scsi_lun *)0)->reservation_holder)
#define ISID_DIGITS 12
#define TARGET_PORT 1 /* lunad's one target port: READ FULL STATUS's RELATIVE TARGET PORT IDENTIFIER */

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
    /*
     * CRH: RESERVE / RELEASE succeed as SPC-4 §5.13.3 says while a PR exists; SIP_C: SPEC_I_PT offered
     * (ATP_C stays 0: ALL_TG_PT is refused); PTPL_C: APTPL offered
     */
    out[2] = 0x10 | 0x08 | (lun->persist ? 0x01 : 0);
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
        store_be16(d + 18, TARGET_PORT);
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
    bool spec_i_pt;       /* REGISTER: the TransportIDs name more ports to register */
    bool unreg;           /* REGISTER AND MOVE: the sender unregisters */
    uint16_t target_port; /* REGISTER AND MOVE: RELATIVE TARGET PORT IDENTIFIER */
    const uint8_t *ids;   /* the TransportIDs (SPEC_I_PT, REGISTER AND MOVE), checked before the lock */
    size_t ids_length;
    size_t ids_offset; /* where they start in the parameter list, for the sense's field pointer */
};

/* ---- TransportIDs (SPC-4 §7.6.4.6; iSCSI only) ---- */

/* An iSCSI TransportID decoded: a port ("IQN,i,0xisid", format 01b) or an initiator device ("IQN", 00b). */
struct transport_id {
    char name[NEXUS_MAX];
    bool port;
};

/* What an iSCSI name may hold here: the state file's records split at blanks, the ISID follows a comma. */
static bool name_character(char c)
{
    return c > ' ' && c < 0x7f && c != ',';
}

static bool hex_digit(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/*
 * text (length bytes, no terminator) as a device name "IQN" or a port name
 * "IQN,i,0xISID" with 12 hex digits, copied to name with the ISID in lower
 * case as the login spells it (iscsi_login.c).  false: neither.
 */
static bool decode_name(const char *text, size_t length, bool port, char *name)
{
    static const char separator[] = ",i,0x";
    const size_t separator_length = sizeof(separator) - 1;
    size_t iqn = 0;
    while (iqn < length && name_character(text[iqn]))
        iqn++;
    if (iqn == 0 || (!port && iqn != length))
        return false;
    if (port && (length != iqn + separator_length + ISID_DIGITS ||
                 strncasecmp(text + iqn, separator, separator_length) != 0))
        return false;
    memcpy(name, text, length);
    name[length] = '\0';
    if (port) {
        memcpy(name + iqn, separator, separator_length);
        for (size_t i = length - ISID_DIGITS; i < length; i++) {
            if (!hex_digit(name[i]))
                return false;
            name[i] = (char)tolower((unsigned char)name[i]);
        }
    }
    return true;
}

/*
 * The TransportID at *at of ids (length bytes), decoded, and *at moved past
 * it.  -EINVAL if it is not a well-formed iSCSI one (or overruns the list);
 * *field is then the byte of ids at fault.
 */
static int next_transport_id(const uint8_t *ids, size_t length, size_t *at, struct transport_id *id, size_t *field)
{
    const uint8_t *header = ids + *at;
    size_t left = length - *at;
    *field = *at;
    if (left < 4 || (header[0] & 0x0f) != PROTOCOL_ISCSI || (header[0] & 0x30) != 0 || (header[0] >> 6) > 1)
        return -EINVAL; /* FORMAT CODE 10b / 11b are reserved for iSCSI */
    size_t additional = load_be16(header + 2);
    *field = *at + 2;
    if (additional == 0 || additional % 4 != 0 || additional > left - 4)
        return -EINVAL;
    const char *text = (const char *)header + 4;
    const char *end = memchr(text, '\0', additional); /* the name must be terminated inside its TransportID */
    *field = *at + 4;
    id->port = (header[0] >> 6) == 1;
    size_t text_length = end ? (size_t)(end - text) : 0;
    if (!end || text_length >= sizeof(id->name) || !decode_name(text, text_length, id->port, id->name))
        return -EINVAL;
    *at += 4 + additional;
    return 0;
}

/*
 * Every TransportID of out well-formed, before the lock is taken; REGISTER
 * AND MOVE's must be exactly one and name one port (one I_T nexus, SPC-4
 * §6.16.4).  -EINVAL with *field the byte of the parameter list at fault.
 */
static int check_transport_ids(const struct pr_out *out, bool move, size_t *field)
{
    size_t at = 0, count = 0;
    struct transport_id id;
    while (at < out->ids_length) {
        if (next_transport_id(out->ids, out->ids_length, &at, &id, field) < 0) {
            *field += out->ids_offset;
            return -EINVAL;
        }
        *field = out->ids_offset; /* for the checks below: the first TransportID */
        if (move && (count > 0 || !id.port))
            return -EINVAL;
        count++;
    }
    if (move && count == 0) {
        *field = 20; /* TRANSPORTID PARAMETER DATA LENGTH: no TransportID */
        return -EINVAL;
    }
    return 0;
}

/* ---- the registrations, added (under lun->lock) ---- */

static struct scsi_registration *find_port(struct scsi_lun *lun, const char *name)
{
    for (size_t i = 0; i < lun->registration_count; i++)
        if (strcasecmp(lun->registrations[i].nexus, name) == 0)
            return &lun->registrations[i];
    return NULL;
}

/*
 * The spelling a port name already has here (a registration's, or a
 * nexus's that has addressed the LUN): TransportIDs match it whatever the
 * case of their letters.  name itself if none.
 */
static const char *known_port(struct scsi_lun *lun, const char *name)
{
    struct scsi_registration *registration = find_port(lun, name);
    if (registration)
        return registration->nexus;
    for (size_t i = 0; i < lun->nexus_count; i++)
        if (strcasecmp(lun->nexuses[i].nexus, name) == 0)
            return lun->nexuses[i].nexus;
    return name;
}

/* Is port ("IQN,i,0xisid") one of the initiator device's ("IQN")? */
static bool port_of(const char *port, const char *device)
{
    size_t length = strlen(device);
    return strncasecmp(port, device, length) == 0 && strncasecmp(port + length, ",i,0x", 5) == 0;
}

/* Room for count more registrations, all or none: 0, -ENOSPC (SCSI_MAX_REGISTRATIONS) or -ENOMEM. */
static int registrations_reserve(struct scsi_lun *lun, size_t count)
{
    if (count > SCSI_MAX_REGISTRATIONS - lun->registration_count)
        return -ENOSPC;
    if (count == 0)
        return 0;
    struct scsi_registration *grown = realloc(lun->registrations, (lun->registration_count + count) * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    lun->registrations = grown;
    return 0;
}

static int add_registration(struct scsi_lun *lun, const char *nexus, uint64_t key)
{
    int ret = registrations_reserve(lun, 1);
    char *copy = ret == 0 ? strdup(nexus) : NULL;
    if (ret < 0 || !copy)
        return ret < 0 ? ret : -ENOMEM;
    lun->registrations[lun->registration_count++] = (struct scsi_registration){.nexus = copy, .key = key};
    return 0;
}

/* SPEC_I_PT's ports, gathered before any is registered. */
struct pending {
    char *names[SCSI_MAX_REGISTRATIONS];
    size_t count;
};

/* One more port to register: 0 (added, or named already), -EINVAL (registered), -ENOSPC, -ENOMEM. */
static int pending_add(struct scsi_lun *lun, struct pending *pending, const char *name)
{
    for (size_t i = 0; i < pending->count; i++)
        if (strcasecmp(pending->names[i], name) == 0)
            return 0; /* the sender's own port, or one named twice: registered once */
    if (find_port(lun, name))
        return -EINVAL; /* SPC-4 §5.12.7 registers unregistered ports only; SCST refused it too, LIO skips it */
    if (lun->registration_count + pending->count >= SCSI_MAX_REGISTRATIONS)
        return -ENOSPC;
    if (!(pending->names[pending->count] = strdup(name)))
        return -ENOMEM;
    pending->count++;
    return 0;
}

/*
 * An initiator device (format 00b) names all its ports: those that have
 * addressed the LUN (its sessions' names are the only ones lunad can
 * know).  None: -EINVAL, as nothing could be registered for it.
 */
static int pending_add_device(struct scsi_lun *lun, struct pending *pending, const char *device)
{
    bool named = false;
    int ret = 0;
    for (size_t i = 0; i < lun->nexus_count && ret == 0; i++) {
        if (port_of(lun->nexuses[i].nexus, device)) {
            named = true;
            ret = pending_add(lun, pending, lun->nexuses[i].nexus);
        }
    }
    return ret == 0 && !named ? -EINVAL : ret;
}

/*
 * REGISTER with SPEC_I_PT from an unregistered nexus (SPC-4 §5.12.7,
 * §6.16.3): the sender and every port its TransportIDs name get the
 * service action key, all or none ("if a registration fails for any
 * initiator port, no registrations shall be made").
 */
static int register_ports(struct scsi_lun *lun, const char *nexus, const struct pr_out *out, uint8_t *asc,
                          uint8_t *ascq)
{
    struct pending pending = {.count = 0};
    int ret = pending_add(lun, &pending, nexus);
    size_t at = 0, field;
    struct transport_id id;
    while (ret == 0 && at < out->ids_length) {
        if (next_transport_id(out->ids, out->ids_length, &at, &id, &field) < 0)
            ret = -EINVAL; /* checked before the lock: cannot happen */
        else
            ret = id.port ? pending_add(lun, &pending, known_port(lun, id.name))
                          : pending_add_device(lun, &pending, id.name);
    }
    if (ret == 0)
        ret = registrations_reserve(lun, pending.count);
    if (ret < 0) {
        for (size_t i = 0; i < pending.count; i++)
            free(pending.names[i]);
        *asc = 0x26;
        *ascq = 0x00; /* INVALID FIELD IN PARAMETER LIST, for -EINVAL */
        return ret;
    }
    for (size_t i = 0; i < pending.count; i++)
        lun->registrations[lun->registration_count++] =
            (struct scsi_registration){.nexus = pending.names[i], .key = out->service_key};
    lun->generation++;
    return 0;
}

/*
 * REGISTER AND MOVE (SPC-4 §5.12.8), from a registrant with its key: the
 * holder hands its reservation, type and scope kept (the CDB's TYPE and
 * SCOPE are ignored), to the port the TransportID names, which is
 * registered with the service action key (or has its key replaced);
 * UNREG then unregisters the sender.  No unit attention: SPC-4 asks none.
 */
static int register_and_move(struct scsi_lun *lun, const char *nexus, const struct pr_out *out, uint8_t *asc,
                             uint8_t *ascq)
{
    if (!lun->reserved) { /* nothing to move: INVALID FIELD IN CDB, as LIO and SCST answer */
        *asc = 0x24;
        *ascq = 0x00;
        return -EINVAL;
    }
    if (!holds(lun, nexus) || all_registrants(lun->reservation_type))
        return 1; /* only the holder moves, and an all-registrants reservation has no one holder */
    struct transport_id id;
    size_t at = 0, field;
    if (next_transport_id(out->ids, out->ids_length, &at, &id, &field) < 0)
        return -EINVAL; /* checked before the lock: cannot happen */
    const char *destination = known_port(lun, id.name);
    if (out->service_key == 0 || out->target_port != TARGET_PORT || strcasecmp(destination, nexus) == 0) {
        *asc = 0x26;
        *ascq = 0x00; /* INVALID FIELD IN PARAMETER LIST */
        return -EINVAL;
    }
    struct scsi_registration *registration = find(lun, destination);
    if (registration) {
        registration->key = out->service_key;
    } else {
        int ret = add_registration(lun, destination, out->service_key);
        if (ret < 0)
            return ret;
    }
    snprintf(lun->reservation_holder, sizeof(lun->reservation_holder), "%s", destination);
    if (out->unreg) /* no longer the holder: its reservation is not released with it */
        unregister(lun, find(lun, nexus));
    lun->generation++;
    return 0;
}

/*
 * One service action against the LUN's state, under its lock.  0 (GOOD),
 * 1 (RESERVATION CONFLICT), or a negative errno: on -EINVAL *asc / *ascq
 * name what was invalid; -ENOSPC is INSUFFICIENT REGISTRATION RESOURCES.
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
        if (registration && out->spec_i_pt) {
            /* SPC-4's register behaviours table: INVALID FIELD IN CDB (SCST too; LIO answers 26 00) */
            *asc = 0x24;
            *ascq = 0x00;
            return -EINVAL;
        }
        if (!registration) {
            if (out->service_key == 0)
                return 0;
            if (out->spec_i_pt)
                return register_ports(lun, nexus, out, asc, ascq);
            int ret = add_registration(lun, nexus, out->service_key);
            if (ret < 0)
                return ret;
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
    case PR_OUT_REGISTER_AND_MOVE:
        return register_and_move(lun, nexus, out, asc, ascq);
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

/* INVALID FIELD IN PARAMETER LIST at byte (bit -1: the whole byte); past what SKS can point at, without a pointer. */
static void invalid_parameter_at(struct scsi_task *task, size_t byte, int bit)
{
    if (byte > UINT16_MAX)
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAMETER_LIST);
    else
        scsi_task_invalid_parameter(task, (unsigned)byte, bit);
}

/*
 * The parameter list (SPC-4 §6.16.3; REGISTER AND MOVE's §6.16.4) into
 * *out, every length checked against what arrived: 24 bytes exactly
 * without TransportIDs, else the header and TRANSPORTID PARAMETER DATA
 * LENGTH's bytes exactly.  false: the task is answered.
 */
static bool parse_parameters(struct scsi_task *task, unsigned action, uint32_t length, struct pr_out *out)
{
    const uint8_t *p = task->data_out;
    if (length < PR_OUT_PARAMETERS || task->data_out_length < length) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
        return false;
    }
    *out = (struct pr_out){.key = load_be64(p), .service_key = load_be64(p + 8), .type = task->cdb[2] & 0x0f,
                           .scope = task->cdb[2] >> 4};
    size_t header = PR_OUT_PARAMETERS;
    if (action == PR_OUT_REGISTER_AND_MOVE) {
        out->aptpl = p[17] & 0x01;
        out->unreg = p[17] & 0x02;
        out->target_port = load_be16(p + 18);
        out->ids_length = load_be32(p + 20);
    } else {
        out->aptpl = p[20] & 0x01;
        out->spec_i_pt = p[20] & 0x08;
        if (p[20] & 0x04) { /* ALL_TG_PT: one target port */
            scsi_task_invalid_parameter(task, 20, 2);
            return false;
        }
        if (out->spec_i_pt && action != PR_OUT_REGISTER) { /* SPC-4 §6.16.3: REGISTER's only */
            scsi_task_invalid_parameter(task, 20, 3);
            return false;
        }
        if (out->spec_i_pt && length >= PR_OUT_SPEC_I_PT_HEADER) {
            header = PR_OUT_SPEC_I_PT_HEADER;
            out->ids_length = load_be32(p + 24);
        } else if (out->spec_i_pt) {
            scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
            return false;
        }
    }
    if ((uint64_t)length != header + (uint64_t)out->ids_length) {
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, ASC_PARAMETER_LIST_LENGTH_ERROR);
        return false;
    }
    out->ids = p + header;
    out->ids_offset = header;
    size_t field;
    if (check_transport_ids(out, action == PR_OUT_REGISTER_AND_MOVE, &field) < 0) {
        invalid_parameter_at(task, field, -1);
        return false;
    }
    return true;
}

void scsi_persistent_reserve_out(struct scsi_task *task)
{
    struct scsi_lun *lun = task->lun;
    unsigned action = task->cdb[1] & 0x1f;
    uint32_t length = load_be32(task->cdb + 5);
    if (action > PR_OUT_REGISTER_AND_MOVE) {
        scsi_task_invalid_field(task, 1, 4);
        return;
    }
    struct pr_out out;
    if (!parse_parameters(task, action, length, &out))
        return;
    /* The service actions whose APTPL bit counts (SPC-4 §6.16.3, §6.16.4). */
    bool registering = action == PR_OUT_REGISTER || action == PR_OUT_REGISTER_AND_IGNORE ||
                       action == PR_OUT_REGISTER_AND_MOVE;
    if (out.aptpl && registering && !lun->persist) { /* nothing can persist across a restart (PTPL_C is 0) */
        scsi_task_invalid_parameter(task, action == PR_OUT_REGISTER_AND_MOVE ? 17 : 20, 0);
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
    else if (ret == -ENOSPC)
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, 0x55, 0x04); /* INSUFFICIENT REGISTRATION RESOURCES */
    else if (ret == -EINVAL)
        scsi_task_check(task, SENSE_ILLEGAL_REQUEST, asc, ascq);
    else if (ret < 0)
        scsi_task_errno(task, ret, true);
    else
        scsi_task_good(task, 0);
}
