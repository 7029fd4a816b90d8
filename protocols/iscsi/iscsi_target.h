/*
 * iscsi_target: lunad's iSCSI target (RFC 7143), server side, as a
 * session_protocol (protocols/session.h): bytes in, PDUs parsed, logins
 * negotiated, SCSI commands run by the SCSI core (protocols/scsi) on the
 * exports' bdevs, PDUs out.  No sockets: the server's connection feeds it.
 *
 * What a connection serves is described by an iscsi_settings: the targets
 * (IQN, alias, LUN number -> export name) and the portals announced to
 * SendTargets.  One connection per session (no MC/S), ErrorRecoveryLevel 0.
 */
#ifndef LUNA_PROTOCOLS_ISCSI_TARGET_H
#define LUNA_PROTOCOLS_ISCSI_TARGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocols/session.h"

struct scsi_persist_store;

#define ISCSI_DEFAULT_PORT 3260
#define ISCSI_DEFAULT_PING_INTERVAL 15.0 /* as LIO's nopin_timeout */

struct iscsi_lun_config {
    uint64_t number;
    char *export_name;
};

/* CHAP credentials (RFC 7143 §12.1.3): NULL user means no CHAP in that direction. */
struct iscsi_chap {
    char *user, *secret;               /* the initiator proves it knows secret */
    char *mutual_user, *mutual_secret; /* the target proves it knows mutual_secret */
};

struct iscsi_target_config {
    char *iqn;                     /* "iqn.2026-12.org.example:disk1" */
    char *alias;                   /* TargetAlias; may be NULL */
    struct iscsi_lun_config *luns; /* in increasing LUN number */
    size_t lun_count;
    struct iscsi_chap chap;
    char **initiators;             /* the initiator names allowed to see and log in; none: all */
    size_t initiator_count;
};

struct iscsi_settings {
    const struct iscsi_target_config *targets;
    size_t target_count;
    /* "ADDRESS:PORT" of every portal, for SendTargets (TargetAddress=...,1). */
    char *const *portals;
    size_t portal_count;
    struct iscsi_chap discovery_chap; /* discovery sessions */
    double ping_interval;             /* seconds of silence before a NOP-In ping; 0: never */
    struct scsi_persist_store *reservations; /* APTPL state (protocols/scsi/scsi_persist.h); NULL: not offered */
};

/*
 * Free the LUNs kept for their persistent reservations after their last
 * session left.  At exit, once no session is left, before the settings'
 * reservations store closes.
 */
void iscsi_shared_luns_release(void);

/* session_start.settings must point to an iscsi_settings that outlives the session. */
extern const struct session_protocol iscsi_session_protocol;

/* True when the target lets initiator see it and log in (its initiators list, empty: everyone). */
bool iscsi_target_allows(const struct iscsi_target_config *target, const char *initiator);

/* True when name is an iSCSI name as RFC 3720 §3.2.6 writes them (iqn., eui. or naa.). */
bool iscsi_name_valid(const char *name);

#endif
