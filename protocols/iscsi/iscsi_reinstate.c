/*
 * Session reinstatement (RFC 7143 §6.3.5): a leading login with TSIH 0
 * for an I_T nexus that already has a session (same initiator name, ISID
 * and target) replaces it.  The usual cause is an initiator that rebooted
 * or lost its connection while the old TCP connection still looks alive
 * here; at ErrorRecoveryLevel 0 the old session's tasks end with its
 * connection.
 *
 * Normal sessions in the full feature phase are listed here, across
 * worker threads.  The new session asks the old one's loop to close it;
 * that loop finds the old session by its number, so a session that went
 * away meanwhile is simply not found (a session leaves the list, and is
 * freed, only on its own thread).
 */
#include <pthread.h>
#include <string.h>

#include "block/aio.h"
#include "common/log.h"
#include "protocols/iscsi/iscsi_internal.h"

static pthread_mutex_t sessions_lock = PTHREAD_MUTEX_INITIALIZER;
static struct iscsi_session *sessions; /* linked through listed_next */
static uint64_t last_number;

static bool same_nexus(const struct iscsi_session *a, const struct iscsi_session *b)
{
    return a->target == b->target && memcmp(a->isid, b->isid, sizeof(a->isid)) == 0 &&
           strcmp(a->initiator_name, b->initiator_name) == 0;
}

/* On the old session's thread: close it if it is still there. */
static void reinstated(void *arg)
{
    uint64_t number = (uint64_t)(uintptr_t)arg;
    pthread_mutex_lock(&sessions_lock);
    struct iscsi_session *session = sessions;
    while (session && session->listed_number != number)
        session = session->listed_next;
    pthread_mutex_unlock(&sessions_lock);
    if (!session || session->freed)
        return;
    log_info("iscsi %s: %s logged in again with the same ISID: session reinstated, closing the old one",
             session->peer, session->initiator_name);
    session->status = SESSION_CLOSED;
    session->input = ISCSI_INPUT_STOPPED;
    iscsi_wake(session);
}

void iscsi_session_list(struct iscsi_session *session)
{
    pthread_mutex_lock(&sessions_lock);
    for (struct iscsi_session *old = sessions; old; old = old->listed_next) {
        if (!same_nexus(old, session) || old->reinstated)
            continue;
        old->reinstated = true;
        uint64_t number = old->listed_number;
        if (aio_context_call_from_any_thread(old->ctx, reinstated, (void *)(uintptr_t)number) < 0)
            log_warn("iscsi %s: out of memory: the session %s replaces stays open", session->peer,
                     session->initiator_name);
    }
    session->listed_number = ++last_number;
    session->listed_next = sessions;
    sessions = session;
    pthread_mutex_unlock(&sessions_lock);
}

void iscsi_session_unlist(struct iscsi_session *session)
{
    if (!session->listed_number)
        return;
    pthread_mutex_lock(&sessions_lock);
    for (struct iscsi_session **link = &sessions; *link; link = &(*link)->listed_next) {
        if (*link == session) {
            *link = session->listed_next;
            break;
        }
    }
    pthread_mutex_unlock(&sessions_lock);
    session->listed_number = 0;
}
