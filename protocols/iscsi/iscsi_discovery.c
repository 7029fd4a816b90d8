/*
 * Text requests (RFC 7143 §11.10-11.11): SendTargets in discovery and
 * normal sessions (Appendix C), answered with each target's name and
 * every portal it is reached at; answers longer than the initiator's
 * MaxRecvDataSegmentLength continue over several Text Responses (C bit,
 * a target transfer tag the initiator echoes for the rest).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "protocols/iscsi/iscsi_internal.h"

bool iscsi_target_allows(const struct iscsi_target_config *target, const char *initiator)
{
    if (target->initiator_count == 0)
        return true;
    for (size_t i = 0; initiator && i < target->initiator_count; i++)
        if (strcmp(target->initiators[i], initiator) == 0)
            return true;
    return false;
}

struct text_request {
    struct iscsi_session *session;
    struct iscsi_text answer;
};

/* A portal "HOST:PORT" as TargetAddress wants it; a wildcard host is the address the initiator used. */
static void add_portal(struct iscsi_session *session, struct iscsi_text *answer, const char *portal)
{
    const char *colon = strrchr(portal, ':');
    bool wildcard = colon == portal || strncmp(portal, "0.0.0.0:", 8) == 0 || strncmp(portal, "[::]:", 5) == 0 ||
                    strncmp(portal, "*:", 2) == 0;
    if (wildcard && session->local)
        iscsi_text_add(answer, "TargetAddress", "%s,1", session->local);
    else
        iscsi_text_add(answer, "TargetAddress", "%s,1", portal);
}

static void add_target(struct iscsi_session *session, struct iscsi_text *answer,
                       const struct iscsi_target_config *target)
{
    const struct iscsi_settings *settings = session->settings;
    if (!iscsi_target_allows(target, session->initiator_name))
        return; /* initiators outside its list do not even see it */
    iscsi_text_add(answer, "TargetName", "%s", target->iqn);
    if (settings->portal_count == 0 && session->local)
        iscsi_text_add(answer, "TargetAddress", "%s,1", session->local);
    for (size_t i = 0; i < settings->portal_count; i++)
        add_portal(session, answer, settings->portals[i]);
}

static int text_key(void *opaque, const char *key, const char *value)
{
    struct text_request *request = opaque;
    struct iscsi_session *session = request->session;
    const struct iscsi_settings *settings = session->settings;
    if (strcmp(key, "SendTargets") != 0) {
        iscsi_text_add(&request->answer, key, "NotUnderstood");
        return 0;
    }
    if (strcmp(value, "All") == 0) {
        if (!session->discovery) { /* only a discovery session may ask for every target */
            iscsi_text_add(&request->answer, key, "Reject");
            return 0;
        }
        for (size_t i = 0; i < settings->target_count; i++)
            add_target(session, &request->answer, &settings->targets[i]);
    } else if (value[0] == '\0') {
        if (session->target) /* the session's own target */
            add_target(session, &request->answer, session->target);
    } else {
        for (size_t i = 0; i < settings->target_count; i++)
            if (strcmp(settings->targets[i].iqn, value) == 0)
                add_target(session, &request->answer, &settings->targets[i]);
    }
    return 0;
}

/* The next part of the pending answer (all of it when it fits one PDU). */
static void send_reply_part(struct iscsi_session *session, const uint8_t *header)
{
    size_t left = session->text_reply_length - session->text_reply_sent;
    size_t part = left < session->params.max_recv_segment ? left : session->params.max_recv_segment;
    bool last = part == left;
    uint8_t bhs[ISCSI_BHS_SIZE] = {ISCSI_OP_TEXT_RESPONSE, last ? ISCSI_FINAL : 0x40};
    memcpy(bhs + 8, header + 8, 8);
    store_be32(bhs + 16, load_be32(header + 16));
    if (!last && session->text_ttt == ISCSI_RESERVED_TAG)
        session->text_ttt = session->next_ttt++ & 0x7fffffff;
    store_be32(bhs + 20, last ? ISCSI_RESERVED_TAG : session->text_ttt);
    iscsi_fill_sequence(session, bhs, true);
    iscsi_send(session, bhs, session->text_reply ? session->text_reply + session->text_reply_sent : NULL,
               (uint32_t)part);
    session->text_reply_sent += part;
    if (last) {
        free(session->text_reply);
        session->text_reply = NULL;
        session->text_reply_length = session->text_reply_sent = 0;
        session->text_ttt = ISCSI_RESERVED_TAG;
    }
}

void iscsi_text_pdu(struct iscsi_session *session)
{
    const uint8_t *header = session->header;
    uint32_t ttt = load_be32(header + 20);
    if (ttt != ISCSI_RESERVED_TAG) {
        /* The initiator wants the rest of a long answer. */
        if (!session->text_reply || ttt != session->text_ttt) {
            iscsi_reject(session, header, ISCSI_REJECT_INVALID_PDU_FIELD);
            return;
        }
        send_reply_part(session, header);
        return;
    }
    if (header[1] & 0x40) { /* keys continued over several requests: luna's answers never need them */
        iscsi_reject(session, header, ISCSI_REJECT_COMMAND_NOT_SUPPORTED);
        return;
    }
    free(session->text_reply); /* a new request abandons an unfinished answer (§11.10.2) */
    session->text_reply = NULL;
    session->text_reply_length = session->text_reply_sent = 0;
    session->text_ttt = ISCSI_RESERVED_TAG;

    struct text_request request = {.session = session};
    int ret = iscsi_text_each((const char *)session->data, session->data_length, text_key, &request);
    if (ret < 0 || request.answer.failed) {
        free(request.answer.data);
        iscsi_reject(session, header, ret == -EINVAL ? ISCSI_REJECT_PROTOCOL_ERROR : ISCSI_REJECT_OUT_OF_RESOURCES);
        return;
    }
    session->text_reply = request.answer.data;
    session->text_reply_length = request.answer.length;
    send_reply_part(session, header);
}
