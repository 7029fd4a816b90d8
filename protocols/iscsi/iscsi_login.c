/*
 * The login phase (RFC 7143 §6.3, §11.12-11.13): the security stage
 * (AuthMethod None), the operational stage (iscsi_text.c negotiates each
 * key), keys continued over several PDUs (C bit), stage transitions (T
 * bit), and on entering the full feature phase the session's LUNs: each
 * of the target's exports found in the export table, with a SCSI LUN over
 * its bdev.  A failed login gets its status class and detail and the
 * connection closes after the response.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/export.h"
#include "block/overlay.h"
#include "common/log.h"
#include "protocols/iscsi/iscsi_internal.h"

enum { STAGE_SECURITY = 0, STAGE_OPERATIONAL = 1, STAGE_FULL_FEATURE = 3 };

/* Status class << 8 | detail (§11.13.5). */
enum {
    LOGIN_SUCCESS = 0x0000,
    LOGIN_INITIATOR_ERROR = 0x0200,
    LOGIN_AUTHENTICATION_FAILED = 0x0201,
    LOGIN_AUTHORIZATION_FAILED = 0x0202,
    LOGIN_NOT_FOUND = 0x0203,
    LOGIN_UNSUPPORTED_VERSION = 0x0205,
    LOGIN_MISSING_PARAMETER = 0x0207,
    LOGIN_SESSION_TYPE_UNSUPPORTED = 0x0209,
    LOGIN_SESSION_DOES_NOT_EXIST = 0x020a,
    LOGIN_INVALID_DURING_LOGIN = 0x020b,
    LOGIN_TARGET_ERROR = 0x0300,
    LOGIN_OUT_OF_RESOURCES = 0x0302,
};

/* What one login request asked for, gathered from its keys. */
struct login_request {
    struct iscsi_session *session;
    struct iscsi_text answer;
    int stage;
    unsigned status;           /* LOGIN_* */
    const char *failure;       /* for the log */
    char auth_methods[256];    /* AuthMethod's list, "" when not sent */
    struct iscsi_chap_keys chap;
    char seen[64][64];         /* the keys of this request: one may not come twice (§6.2) */
    size_t seen_count;
};

static atomic_uint next_tsih = 1;

static const struct iscsi_target_config *target_find(const struct iscsi_settings *settings, const char *iqn)
{
    for (size_t i = 0; settings && i < settings->target_count; i++)
        if (strcmp(settings->targets[i].iqn, iqn) == 0)
            return &settings->targets[i];
    return NULL;
}

/* True when the comma-separated list holds item. */
static bool list_has(const char *list, const char *item)
{
    size_t length = strlen(item);
    for (const char *p = list; p && *p;) {
        if (strncmp(p, item, length) == 0 && (p[length] == ',' || p[length] == '\0'))
            return true;
        p = strchr(p, ',');
        if (p)
            p++;
    }
    return false;
}

static void fail(struct login_request *request, unsigned status, const char *why)
{
    if (request->status == LOGIN_SUCCESS) {
        request->status = status;
        request->failure = why;
    }
}

static int login_key(void *opaque, const char *key, const char *value)
{
    struct login_request *request = opaque;
    struct iscsi_session *session = request->session;
    log_debug("iscsi %s: login key %s=%s", session->peer, key, value);
    for (size_t i = 0; i < request->seen_count; i++)
        if (strcmp(request->seen[i], key) == 0) {
            fail(request, LOGIN_INITIATOR_ERROR, "a key given twice");
            return 0;
        }
    if (request->seen_count < sizeof(request->seen) / sizeof(request->seen[0]))
        snprintf(request->seen[request->seen_count++], sizeof(request->seen[0]), "%s", key);
    if ((strcmp(key, "SessionType") == 0 || strcmp(key, "InitiatorName") == 0 || strcmp(key, "TargetName") == 0) &&
        session->login_answered) {
        fail(request, LOGIN_INITIATOR_ERROR, "a leading-login key after the first request"); /* §6.3 */
        return 0;
    }
    if (strcmp(key, "InitiatorName") == 0) {
        if (!iscsi_name_valid(value)) {
            fail(request, LOGIN_INITIATOR_ERROR, "InitiatorName is not an iSCSI name");
            return 0;
        }
        free(session->initiator_name);
        session->initiator_name = strdup(value);
        if (!session->initiator_name)
            return -ENOMEM;
    } else if (strcmp(key, "TargetName") == 0) {
        session->target = target_find(session->settings, value);
        if (!session->target)
            fail(request, LOGIN_NOT_FOUND, "no such target");
    } else if (strcmp(key, "SessionType") == 0) {
        if (strcmp(value, "Discovery") == 0)
            session->discovery = true;
        else if (strcmp(value, "Normal") == 0)
            session->discovery = false;
        else
            fail(request, LOGIN_SESSION_TYPE_UNSUPPORTED, "unknown SessionType");
    } else if (strcmp(key, "AuthMethod") == 0) {
        if (request->stage != STAGE_SECURITY)
            fail(request, LOGIN_INITIATOR_ERROR, "AuthMethod outside the security stage");
        snprintf(request->auth_methods, sizeof(request->auth_methods), "%s", value);
    } else if (iscsi_chap_key(&request->chap, key, value)) {
        if (request->stage != STAGE_SECURITY)
            fail(request, LOGIN_INITIATOR_ERROR, "CHAP keys outside the security stage");
    } else if (strcmp(key, "InitiatorAlias") == 0 || strcmp(key, "TargetAlias") == 0 ||
               strcmp(key, "TargetAddress") == 0 || strcmp(key, "TargetPortalGroupTag") == 0) {
        /* Declarations of the initiator's, or target keys it may not send: nothing to answer. */
    } else {
        if (iscsi_negotiate_key(&session->params, session->discovery, key, value, &request->answer) < 0) {
            iscsi_text_add(&request->answer, key, "Reject");
            fail(request, LOGIN_INITIATOR_ERROR, "an unacceptable key value");
        }
    }
    return 0;
}

/*
 * The security stage: AuthMethod chosen by the target's credentials (CHAP
 * when it has a CHAP user, else None), the CHAP exchange, and no way past
 * the stage before it is done.  False: the login may not leave the
 * security stage yet (or failed: request->status says).
 */
static bool authenticate(struct login_request *request)
{
    struct iscsi_session *session = request->session;
    const struct iscsi_chap *credentials =
        session->discovery ? &session->settings->discovery_chap : &session->target->chap;
    bool chap_required = credentials->user != NULL;
    if (request->auth_methods[0]) {
        if (chap_required && list_has(request->auth_methods, "CHAP")) {
            iscsi_text_add(&request->answer, "AuthMethod", "CHAP");
            session->chap.state = ISCSI_CHAP_OFFERED;
        } else if (!chap_required && list_has(request->auth_methods, "None")) {
            iscsi_text_add(&request->answer, "AuthMethod", "None");
        } else {
            iscsi_text_add(&request->answer, "AuthMethod", "Reject");
            fail(request, LOGIN_AUTHENTICATION_FAILED,
                 chap_required ? "CHAP is required and the initiator does not offer it"
                               : "no AuthMethod luna offers (None; CHAP needs chap_user and chap_secret)");
            return false;
        }
    }
    const char *why = iscsi_chap_step(session, credentials, &request->chap, &request->answer);
    if (why) {
        fail(request, LOGIN_AUTHENTICATION_FAILED, why);
        return false;
    }
    if (!chap_required || session->chap.state == ISCSI_CHAP_DONE)
        return true;
    if (request->stage != STAGE_SECURITY)
        fail(request, LOGIN_AUTHENTICATION_FAILED, "authentication required (CHAP)");
    /* The initiator may ask to move on (T bit) before CHAP ran: the target stays (§6.3). */
    return false;
}

/* Serial numbers, vendor strings and a stable NAA for each LUN (VPD 0x80, 0x83). */
static uint64_t name_hash(const char *a, const char *b)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = a; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    h = (h ^ '/') * 1099511628211ull;
    for (const char *p = b; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return h;
}

/* The SCSI LUN over the export (or the initiator's overlay view of it) in slot lun, shared with other sessions. */
static int serve_lun(struct iscsi_session *session, struct iscsi_lun *lun, struct export *export,
                     const char *export_name)
{
    /* APTPL's name for the LUN: its target, number and disk (an initiator's own overlay is a disk of its own). */
    char *persist_key = NULL;
    if (asprintf(&persist_key, "%s,%llu,%s%s%s", session->target->iqn, (unsigned long long)lun->number, export_name,
                 export->identity ? "/" : "", export->identity ? export->identity : "") < 0)
        return -ENOMEM;
    struct scsi_lun_options options = {
        .bdev = export->bdev,
        .readonly = export->readonly,
        .serial = export_name,
        .naa = name_hash(session->target->iqn, export_name),
        .write_cache = (export->bdev->caps & BDEV_CAP_FLUSH) != 0,
        .persist = session->settings ? session->settings->reservations : NULL,
        .persist_key = persist_key,
        .writers = &export->writers,
    };
    int ret = iscsi_shared_lun_get(export, session->target->iqn, lun->number, &options, &lun->scsi);
    free(persist_key);
    return ret;
}

static void finish_login(struct iscsi_session *session);
static void respond(struct iscsi_session *session, const uint8_t *header, uint8_t flags, unsigned status,
                    const struct iscsi_text *answer);
static void login_failed(struct iscsi_session *session, const uint8_t *header, unsigned status, const char *why);

static void enter_full_feature(struct iscsi_session *session)
{
    for (size_t i = 0; i < session->lun_slots; i++)
        if (session->luns[i].scsi)
            session->lun_numbers[session->lun_count++] = session->luns[i].number;
    session->phase = ISCSI_PHASE_FULL_FEATURE;
    if (!session->discovery)
        iscsi_session_list(session);
    const struct iscsi_params *params = &session->params;
    log_info("iscsi %s: %s session for %s%s%s (%zu LUN%s%s%s)", session->peer,
             session->discovery ? "discovery" : "normal", session->initiator_name,
             session->discovery ? "" : " on ", session->discovery ? "" : session->target->iqn,
             session->lun_count, session->lun_count == 1 ? "" : "s",
             params->header_digest ? ", header digest" : "", params->data_digest ? ", data digest" : "");
}

/* Every overlay the login waited for is open (or failed): answer it. */
static void finish_login(struct iscsi_session *session)
{
    struct iscsi_text answer = session->login_answer;
    session->login_answer = (struct iscsi_text){0};
    if (session->freed) {
        free(answer.data);
        return;
    }
    session->input = ISCSI_INPUT_HEADER;
    if (session->lun_attach_failed) {
        login_failed(session, session->login_header, LOGIN_OUT_OF_RESOURCES, "an overlay could not be opened");
    } else {
        respond(session, session->login_header, session->login_flags, LOGIN_SUCCESS, &answer);
        enter_full_feature(session);
    }
    free(answer.data);
    iscsi_wake(session);
}

/* The initiator's overlay of a LUN's export opened (or failed to). */
static void lun_attached(void *opaque, int result, struct export *view, char *error_message)
{
    struct iscsi_lun *lun = opaque;
    struct iscsi_session *session = lun->session;
    const struct iscsi_lun_config *config = &session->target->luns[lun - session->luns]; /* slot i is LUN i's */
    lun->attaching = NULL;
    if (result < 0) {
        log_warn("iscsi %s: target %s LUN %llu: cannot open %s's overlay: %s", session->peer,
                 session->target->iqn, (unsigned long long)lun->number, session->initiator_name,
                 error_message ? error_message : strerror(-result));
        session->lun_attach_failed = true;
    } else {
        lun->export = view;
        if (serve_lun(session, lun, view, config->export_name) < 0)
            session->lun_attach_failed = true;
    }
    free(error_message);
    if (--session->luns_attaching == 0)
        finish_login(session);
}

/*
 * Open the target's LUNs for this session: an export without overlays at
 * once, one with overlays as this initiator's view (its IQN is the
 * overlay's identity: one golden image, each machine its own layer), on
 * the pool.  A missing export is logged and left out.
 */
static int open_luns(struct iscsi_session *session)
{
    const struct iscsi_target_config *target = session->target;
    size_t slots = target->lun_count ? target->lun_count : 1;
    session->luns = calloc(slots, sizeof(*session->luns));
    session->lun_numbers = calloc(slots, sizeof(*session->lun_numbers));
    if (!session->luns || !session->lun_numbers)
        return -ENOMEM;
    session->lun_slots = target->lun_count;
    for (size_t i = 0; i < target->lun_count; i++) {
        const struct iscsi_lun_config *config = &target->luns[i];
        struct iscsi_lun *lun = &session->luns[i];
        lun->number = config->number;
        lun->session = session;
        struct export *export = export_table_find(session->exports, config->export_name);
        if (!export) {
            log_warn("iscsi %s: target %s LUN %llu: no export '%s'", session->peer, target->iqn,
                     (unsigned long long)config->number, config->export_name);
            continue;
        }
        if (export->config.overlay != EXPORT_OVERLAY_NONE) {
            lun->attaching = export_attach_async(export, session->initiator_name, session->ctx, lun_attached, lun);
            if (!lun->attaching)
                return -ENOMEM;
            session->luns_attaching++;
            continue;
        }
        int ret = serve_lun(session, lun, export, config->export_name);
        if (ret < 0)
            return ret;
        lun->export = export_ref(export);
    }
    return 0;
}

static void respond(struct iscsi_session *session, const uint8_t *header, uint8_t flags, unsigned status,
                    const struct iscsi_text *answer)
{
    uint8_t bhs[ISCSI_BHS_SIZE] = {ISCSI_OP_LOGIN_RESPONSE, flags, 0x00, 0x00};
    memcpy(bhs + 8, header + 8, 6); /* ISID */
    store_be16(bhs + 14, (flags & ISCSI_FINAL) && (flags & 3) == STAGE_FULL_FEATURE ? session->tsih : 0);
    store_be32(bhs + 16, load_be32(header + 16));
    iscsi_fill_sequence(session, bhs, true);
    bhs[36] = (uint8_t)(status >> 8);
    bhs[37] = (uint8_t)status;
    iscsi_send(session, bhs, answer ? answer->data : NULL, answer ? (uint32_t)answer->length : 0);
}

static void login_failed(struct iscsi_session *session, const uint8_t *header, unsigned status, const char *why)
{
    log_warn("iscsi %s: login refused (status %#06x): %s", session->peer, status, why);
    respond(session, header, (uint8_t)(header[1] & 0x0c), status, NULL);
    session->input = ISCSI_INPUT_STOPPED;
    if (session->status == SESSION_ACTIVE)
        session->status = SESSION_DRAINING;
}

/* Keys continued over several PDUs (C bit) are gathered, each such PDU answered empty (§6.2). */
static bool gather_text(struct iscsi_session *session, const uint8_t *header)
{
    if (session->data_length) {
        if (session->login_text_length + session->data_length > ISCSI_MAX_TEXT) {
            login_failed(session, header, LOGIN_INITIATOR_ERROR, "login keys too long");
            return false;
        }
        char *grown = realloc(session->login_text, session->login_text_length + session->data_length);
        if (!grown) {
            login_failed(session, header, LOGIN_OUT_OF_RESOURCES, "out of memory");
            return false;
        }
        memcpy(grown + session->login_text_length, session->data, session->data_length);
        session->login_text = grown;
        session->login_text_length += session->data_length;
    }
    if (header[1] & 0x40) {
        respond(session, header, (uint8_t)(header[1] & 0x0c), LOGIN_SUCCESS, NULL);
        return false;
    }
    return true;
}

void iscsi_login_pdu(struct iscsi_session *session)
{
    const uint8_t *header = session->header;
    bool transit = header[1] & 0x80;
    int stage = (header[1] >> 2) & 3, next_stage = header[1] & 3;
    if (!session->login_started) {
        session->login_started = true;
        memcpy(session->isid, header + 8, 6);
        session->exp_cmd_sn = load_be32(header + 24);
        session->stat_sn = 1;
        session->login_stage = stage;
        if (header[3] > 0) { /* Version-min: luna speaks version 0 */
            login_failed(session, header, LOGIN_UNSUPPORTED_VERSION, "unsupported iSCSI version");
            return;
        }
        if (load_be16(header + 14) != 0) {
            /* A TSIH asks to add a connection to a session: MaxConnections is 1. */
            login_failed(session, header, LOGIN_SESSION_DOES_NOT_EXIST, "no session to add a connection to");
            return;
        }
    }
    if (stage != session->login_stage || stage == 2 || (transit && next_stage <= stage) ||
        (transit && next_stage == 2) || memcmp(session->isid, header + 8, 6) != 0) {
        login_failed(session, header, LOGIN_INITIATOR_ERROR, "an invalid login stage transition");
        return;
    }
    if (!gather_text(session, header))
        return;

    bool first = !session->login_answered;
    struct login_request request = {.session = session, .stage = stage};
    int ret = iscsi_text_each(session->login_text, session->login_text_length, login_key, &request);
    session->login_answered = true;
    iscsi_negotiation_finish(&session->params, &request.answer);
    free(session->login_text);
    session->login_text = NULL;
    session->login_text_length = 0;
    if (ret == -ENOMEM || request.answer.failed) {
        free(request.answer.data);
        login_failed(session, header, LOGIN_OUT_OF_RESOURCES, "out of memory");
        return;
    }
    if (ret < 0)
        fail(&request, LOGIN_INITIATOR_ERROR, "malformed login keys");
    if (first && request.status == LOGIN_SUCCESS) {
        if (!session->initiator_name)
            fail(&request, LOGIN_MISSING_PARAMETER, "no InitiatorName");
        else if (!session->discovery && !session->target)
            fail(&request, LOGIN_MISSING_PARAMETER, "no TargetName");
    }
    if (first && request.status == LOGIN_SUCCESS && !session->discovery &&
        !iscsi_target_allows(session->target, session->initiator_name))
        fail(&request, LOGIN_AUTHORIZATION_FAILED, "the initiator is not in the target's initiators list");
    if (request.status == LOGIN_SUCCESS && !authenticate(&request))
        transit = false;
    if (request.status != LOGIN_SUCCESS) {
        free(request.answer.data);
        login_failed(session, header, request.status, request.failure);
        return;
    }
    if (first && !session->discovery) {
        iscsi_text_add(&request.answer, "TargetPortalGroupTag", "1"); /* §13.9: in the first response */
        if (session->target->alias)
            iscsi_text_add(&request.answer, "TargetAlias", "%s", session->target->alias);
    }
    bool entering_full_feature = transit && next_stage == STAGE_FULL_FEATURE;
    if (entering_full_feature) /* ours, declared as the login ends (§13.12) */
        iscsi_text_add(&request.answer, "MaxRecvDataSegmentLength", "%u", ISCSI_TARGET_MAX_RECV_SEGMENT);
    if (request.answer.failed) {
        free(request.answer.data);
        login_failed(session, header, LOGIN_OUT_OF_RESOURCES, "out of memory");
        return;
    }
    if (entering_full_feature) {
        session->tsih = (uint16_t)atomic_fetch_add(&next_tsih, 1);
        if (session->tsih == 0)
            session->tsih = (uint16_t)atomic_fetch_add(&next_tsih, 1);
        const uint8_t *isid = session->isid;
        if (asprintf(&session->nexus, "%s,i,0x%02x%02x%02x%02x%02x%02x", session->initiator_name, isid[0],
                     isid[1], isid[2], isid[3], isid[4], isid[5]) < 0)
            session->nexus = NULL;
        if (!session->nexus || (!session->discovery && open_luns(session) < 0)) {
            free(request.answer.data);
            login_failed(session, header, LOGIN_OUT_OF_RESOURCES, "out of memory opening the LUNs");
            return;
        }
    }
    uint8_t flags = (uint8_t)(stage << 2);
    if (transit)
        flags |= (uint8_t)(ISCSI_FINAL | next_stage);
    if (transit)
        session->login_stage = next_stage;
    if (entering_full_feature && session->luns_attaching) {
        /* The answer waits for the overlays; no input meanwhile (a login has nothing else to say). */
        memcpy(session->login_header, header, ISCSI_BHS_SIZE);
        session->login_flags = flags;
        session->login_answer = request.answer;
        session->input = ISCSI_INPUT_ATTACHING;
        return;
    }
    respond(session, header, flags, LOGIN_SUCCESS, &request.answer);
    free(request.answer.data);
    if (entering_full_feature)
        enter_full_feature(session);
}

void iscsi_login_free(struct iscsi_session *session)
{
    free(session->initiator_name);
    session->initiator_name = NULL;
    free(session->nexus);
    session->nexus = NULL;
    free(session->login_text);
    session->login_text = NULL;
}
