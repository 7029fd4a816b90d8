/*
 * Fixed newstyle handshake and option haggling, up to the moment
 * NBD_OPT_GO or NBD_OPT_EXPORT_NAME enters transmission.  Options whose
 * data we parse are buffered whole (they are small); anything else is
 * skipped as it arrives, so a huge option never has to fit in memory.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/export.h"
#include "block/overlay.h"
#include "common/log.h"
#include "common/send_queue.h"
#include "protocols/nbd/nbd_internal.h"

int nbd_handshake_greet(struct nbd_session *session)
{
    uint8_t greeting[NBD_GREETING_SIZE];
    store_be64(greeting, NBD_MAGIC);
    store_be64(greeting + 8, NBD_IHAVEOPT);
    store_be16(greeting + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    return send_queue_copy(session->out, greeting, sizeof(greeting));
}

static int option_reply(struct nbd_session *session, uint32_t type, const void *data, size_t length)
{
    uint8_t header[NBD_OPTION_REPLY_HEADER_SIZE];
    nbd_option_reply_encode(header, session->option.option, type, (uint32_t)length);
    int ret = send_queue_copy(session->out, header, sizeof(header));
    if (ret == 0)
        ret = send_queue_copy(session->out, data, length);
    return ret;
}

static int option_error(struct nbd_session *session, uint32_t type, const char *message)
{
    log_debug("nbd %s: %s refused: %s", session->peer, nbd_option_name(session->option.option),
              message);
    return option_reply(session, type, message, strlen(message));
}

/*
 * "" is the default export: the first one configured (as nbdkit and
 * qemu-nbd do).  An export with persistent overlays also answers to
 * NAME/IDENTITY, the overlay of that client; identity (NBD_MAX_STRING + 1
 * bytes, or NULL when the caller does not attach) receives IDENTITY, or ""
 * when the name has none.
 */
static struct export *find_export(const struct nbd_session *session, const uint8_t *name,
                                  size_t length, char *identity)
{
    if (identity)
        identity[0] = '\0';
    if (length == 0)
        return session->exports->count ? session->exports->exports[0] : NULL;
    char key[NBD_MAX_STRING + 1];
    if (length > NBD_MAX_STRING)
        return NULL;
    memcpy(key, name, length);
    key[length] = '\0';
    struct export *export = export_table_find(session->exports, key);
    char *slash = strrchr(key, '/');
    if (export || !slash)
        return export;
    *slash = '\0';
    export = export_table_find(session->exports, key);
    if (!export || export->config.overlay != EXPORT_OVERLAY_PERSISTENT)
        return NULL;
    if (identity)
        strcpy(identity, slash + 1);
    return export;
}

static int export_name_reply(struct nbd_session *session, struct export *export)
{
    uint8_t reply[NBD_EXPORT_NAME_REPLY_SIZE + NBD_EXPORT_NAME_ZEROES] = {0};
    store_be64(reply, bdev_size(export->bdev));
    store_be16(reply + 8, nbd_export_transmission_flags(export, nbd_session_chunks(session)));
    size_t size = NBD_EXPORT_NAME_REPLY_SIZE + (session->no_zeroes ? 0 : NBD_EXPORT_NAME_ZEROES);
    return send_queue_copy(session->out, reply, size);
}

static int info_replies(struct nbd_session *session, const struct export *export, bool want_name,
                        bool want_description);

static bool valid_string(const uint8_t *text, size_t length)
{
    return length == 0 || (length <= NBD_MAX_STRING && !memchr(text, '\0', length));
}

/*
 * The client's overlay opened (or failed to): answer the GO or
 * EXPORT_NAME that asked for it, and start serving it.
 */
static void overlay_attached(void *opaque, int result, struct export *view, char *error_message)
{
    struct nbd_session *session = opaque;
    session->attaching = NULL;
    bool go = session->attaching_option == NBD_OPT_GO;
    session->option.option = session->attaching_option; /* what option replies name */
    int ret = 0;
    if (result < 0) {
        log_warn("nbd %s: cannot open an overlay: %s", session->peer,
                    error_message ? error_message : "unknown error");
        if (go) {
            ret = option_error(session, NBD_REP_ERR_UNKNOWN,
                               result == -EINVAL && error_message ? error_message : "the export's overlay cannot be opened");
            session->input = NBD_INPUT_OPTION_HEADER;
        } else {
            session->status = SESSION_CLOSED; /* EXPORT_NAME has no way to refuse */
            session->input = NBD_INPUT_STOPPED;
        }
    } else {
        ret = go ? info_replies(session, view, session->attaching_want_name, session->attaching_want_description)
                 : export_name_reply(session, view);
        if (ret == 0)
            nbd_transmission_start(session, view);
        export_unref(view);
    }
    free(error_message);
    if (ret < 0)
        nbd_session_out_of_memory(session);
    session->ops->wake(session->opaque);
}

/*
 * Open the client's overlay of export on the pool (it creates and opens
 * files), with input paused meanwhile; overlay_attached answers.
 */
static int attach_overlay(struct nbd_session *session, struct export *export, const char *identity, bool want_name,
                          bool want_description)
{
    session->attaching_option = session->option.option;
    session->attaching_want_name = want_name;
    session->attaching_want_description = want_description;
    session->attaching = export_attach_async(export, identity[0] ? identity : NULL, session->ctx, overlay_attached,
                                             session);
    if (!session->attaching) {
        if (session->option.option == NBD_OPT_GO)
            return option_error(session, NBD_REP_ERR_SHUTDOWN, "the server cannot open overlays now");
        session->status = SESSION_CLOSED;
        session->input = NBD_INPUT_STOPPED;
        return 0;
    }
    session->input = NBD_INPUT_ATTACHING;
    return 0;
}

static int option_export_name(struct nbd_session *session)
{
    /* No reply can carry an error here: refusing means hanging up. */
    if (session->extended) {
        nbd_session_violation(session, "NBD_OPT_EXPORT_NAME after extended headers");
        return 0;
    }
    const uint8_t *name = session->option_data;
    size_t length = session->option.length;
    char identity[NBD_MAX_STRING + 1];
    struct export *export = valid_string(name, length) ? find_export(session, name, length, identity) : NULL;
    if (!export) {
        log_info("nbd %s: NBD_OPT_EXPORT_NAME '%.*s': no such export, disconnecting",
                 session->peer, (int)length, (const char *)name);
        session->status = SESSION_CLOSED;
        session->input = NBD_INPUT_STOPPED;
        return 0;
    }
    if (export->config.overlay != EXPORT_OVERLAY_NONE)
        return attach_overlay(session, export, identity, false, false);
    int ret = export_name_reply(session, export);
    if (ret == 0)
        nbd_transmission_start(session, export);
    return ret;
}

static int option_list(struct nbd_session *session)
{
    if (session->option.length != 0)
        return option_error(session, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
    const struct export_table *table = session->exports;
    for (size_t i = 0; i < table->count; i++) {
        const struct export_config *config = &table->exports[i]->config;
        size_t name_length = strlen(config->name);
        size_t description_length = config->description ? strlen(config->description) : 0;
        if (name_length > NBD_MAX_STRING || description_length > NBD_MAX_STRING)
            continue; /* not expressible on the wire */
        uint8_t header[NBD_OPTION_REPLY_HEADER_SIZE + 4];
        nbd_option_reply_encode(header, NBD_OPT_LIST, NBD_REP_SERVER,
                                (uint32_t)(4 + name_length + description_length));
        store_be32(header + NBD_OPTION_REPLY_HEADER_SIZE, (uint32_t)name_length);
        int ret = send_queue_copy(session->out, header, sizeof(header));
        if (ret == 0)
            ret = send_queue_copy(session->out, config->name, name_length);
        if (ret == 0)
            ret = send_queue_copy(session->out, config->description, description_length);
        if (ret < 0)
            return ret;
    }
    return option_reply(session, NBD_REP_ACK, NULL, 0);
}

static int info_string(struct nbd_session *session, uint16_t type, const char *text)
{
    size_t length = strlen(text);
    if (length > NBD_MAX_STRING)
        return 0; /* optional information: omit rather than send an invalid string */
    uint8_t header[NBD_OPTION_REPLY_HEADER_SIZE + 2];
    nbd_option_reply_encode(header, session->option.option, NBD_REP_INFO, (uint32_t)(2 + length));
    store_be16(header + NBD_OPTION_REPLY_HEADER_SIZE, type);
    int ret = send_queue_copy(session->out, header, sizeof(header));
    return ret ? ret : send_queue_copy(session->out, text, length);
}

/* NBD_OPT_INFO and NBD_OPT_GO share their request and reply formats. */
static int option_info(struct nbd_session *session, bool go)
{
    const uint8_t *data = session->option_data;
    uint32_t length = session->option.length;
    if (length < 6)
        return option_error(session, NBD_REP_ERR_INVALID, "option data too short");
    uint32_t name_length = load_be32(data);
    if (name_length > length - 6)
        return option_error(session, NBD_REP_ERR_INVALID, "export name length exceeds the option");
    const uint8_t *name = data + 4;
    uint16_t request_count = load_be16(data + 4 + name_length);
    if (4 + name_length + 2 + 2 * (uint64_t)request_count != length)
        return option_error(session, NBD_REP_ERR_INVALID, "information request count does not match");
    if (!valid_string(name, name_length))
        return option_error(session, NBD_REP_ERR_INVALID, "invalid export name");
    bool want_name = false, want_description = false;
    for (uint16_t i = 0; i < request_count; i++) {
        uint16_t type = load_be16(data + 4 + name_length + 2 + 2 * i);
        want_name |= type == NBD_INFO_NAME;
        want_description |= type == NBD_INFO_DESCRIPTION;
    }
    char identity[NBD_MAX_STRING + 1];
    struct export *export = find_export(session, name, name_length, identity);
    if (!export)
        return option_error(session, NBD_REP_ERR_UNKNOWN, "no such export");
    if (go && export->config.overlay != EXPORT_OVERLAY_NONE)
        return attach_overlay(session, export, identity, want_name, want_description);
    int ret = info_replies(session, export, want_name, want_description);
    if (ret == 0 && go)
        nbd_transmission_start(session, export);
    return ret;
}

/* The INFO replies for export, then the ACK. */
static int info_replies(struct nbd_session *session, const struct export *export, bool want_name,
                        bool want_description)
{
    int ret = 0;
    if (want_name)
        ret = info_string(session, NBD_INFO_NAME, export->config.name);
    if (ret == 0 && want_description && export->config.description)
        ret = info_string(session, NBD_INFO_DESCRIPTION, export->config.description);
    if (ret == 0) {
        /* Sent even when not asked for: the spec lets a server volunteer it. */
        uint32_t sizes[3];
        nbd_export_block_sizes(export, session->config.max_payload, sizes);
        uint8_t info[14];
        store_be16(info, NBD_INFO_BLOCK_SIZE);
        store_be32(info + 2, sizes[0]);
        store_be32(info + 6, sizes[1]);
        store_be32(info + 10, sizes[2]);
        ret = option_reply(session, NBD_REP_INFO, info, sizeof(info));
    }
    if (ret == 0) {
        uint8_t info[12];
        store_be16(info, NBD_INFO_EXPORT);
        store_be64(info + 2, bdev_size(export->bdev));
        store_be16(info + 10, nbd_export_transmission_flags(export, nbd_session_chunks(session)));
        ret = option_reply(session, NBD_REP_INFO, info, sizeof(info));
    }
    if (ret == 0)
        ret = option_reply(session, NBD_REP_ACK, NULL, 0);
    return ret;
}

static bool query_is(const uint8_t *query, uint32_t length, const char *text)
{
    return length == strlen(text) && memcmp(query, text, length) == 0;
}

static int option_meta_context(struct nbd_session *session, bool set)
{
    const uint8_t *data = session->option_data;
    uint32_t length = session->option.length;
    /* A SET replaces the previous selection even when it fails. */
    if (set) {
        session->meta_export = NULL;
        session->meta_allocation = false;
    }
    if (!nbd_session_chunks(session))
        return option_error(session, NBD_REP_ERR_INVALID, "structured replies not negotiated");
    if (length < 8)
        return option_error(session, NBD_REP_ERR_INVALID, "option data too short");
    uint32_t name_length = load_be32(data);
    if (name_length > length - 8)
        return option_error(session, NBD_REP_ERR_INVALID, "export name length exceeds the option");
    const uint8_t *name = data + 4;
    if (!valid_string(name, name_length))
        return option_error(session, NBD_REP_ERR_INVALID, "invalid export name");
    uint32_t query_count = load_be32(data + 4 + name_length);
    uint64_t position = 8 + (uint64_t)name_length;
    bool allocation = !set && query_count == 0; /* an empty LIST lists everything */
    for (uint32_t i = 0; i < query_count; i++) {
        if (position + 4 > length)
            return option_error(session, NBD_REP_ERR_INVALID, "query count exceeds the option");
        uint32_t query_length = load_be32(data + position);
        position += 4;
        if (query_length > length - position)
            return option_error(session, NBD_REP_ERR_INVALID, "query length exceeds the option");
        const uint8_t *query = data + position;
        if (!valid_string(query, query_length))
            return option_error(session, NBD_REP_ERR_INVALID, "invalid query string");
        /* Unknown namespaces and leaves are ignored, as the spec requires. */
        if (query_is(query, query_length, NBD_META_CONTEXT_ALLOCATION) ||
            (!set && query_is(query, query_length, "base:")))
            allocation = true;
        position += query_length;
    }
    if (position != length)
        return option_error(session, NBD_REP_ERR_INVALID, "trailing bytes after the queries");
    struct export *export = find_export(session, name, name_length, NULL);
    if (!export)
        return option_error(session, NBD_REP_ERR_UNKNOWN, "no such export");
    int ret = 0;
    if (allocation) {
        uint8_t reply[4 + sizeof(NBD_META_CONTEXT_ALLOCATION) - 1];
        /* LIST replies carry id 0: the spec reserves it there. */
        store_be32(reply, set ? NBD_ALLOCATION_CONTEXT_ID : 0);
        memcpy(reply + 4, NBD_META_CONTEXT_ALLOCATION, sizeof(NBD_META_CONTEXT_ALLOCATION) - 1);
        ret = option_reply(session, NBD_REP_META_CONTEXT, reply, sizeof(reply));
    }
    if (ret == 0 && set) {
        session->meta_export = export;
        session->meta_allocation = allocation;
    }
    return ret ? ret : option_reply(session, NBD_REP_ACK, NULL, 0);
}

static int option_without_data(struct nbd_session *session, bool *enabled)
{
    if (session->option.length != 0)
        return option_error(session, NBD_REP_ERR_INVALID, "option takes no data");
    *enabled = true;
    return option_reply(session, NBD_REP_ACK, NULL, 0);
}

static bool option_keeps_data(uint32_t option)
{
    switch (option) {
    case NBD_OPT_EXPORT_NAME:
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return true;
    default:
        return false;
    }
}

/* The whole option has arrived (its data buffered, or skipped when not needed or too long). */
static void handle_option(struct nbd_session *session)
{
    uint32_t option = session->option.option;
    bool have_data = session->option_data || session->option.length == 0;
    log_debug("nbd %s: %s (%u bytes)", session->peer, nbd_option_name(option),
              session->option.length);
    int ret;
    switch (option) {
    case NBD_OPT_EXPORT_NAME:
        ret = option_export_name(session);
        break;
    case NBD_OPT_ABORT:
        /* Data with ABORT is to be ignored, not refused. */
        ret = option_reply(session, NBD_REP_ACK, NULL, 0);
        session->status = SESSION_DRAINING;
        session->input = NBD_INPUT_STOPPED;
        log_debug("nbd %s: client aborted the handshake", session->peer);
        break;
    case NBD_OPT_LIST:
        ret = option_list(session);
        break;
    case NBD_OPT_STARTTLS:
        /* NOTLS mode: this server has no TLS at all. */
        ret = option_error(session, NBD_REP_ERR_UNSUP, "TLS is not supported by this server");
        break;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        ret = have_data ? option_info(session, option == NBD_OPT_GO)
                        : option_error(session, NBD_REP_ERR_TOO_BIG, "option data too long");
        break;
    case NBD_OPT_STRUCTURED_REPLY:
        if (session->extended)
            ret = option_error(session, NBD_REP_ERR_EXT_HEADER_REQD,
                               "extended headers already negotiated");
        else
            ret = option_without_data(session, &session->structured);
        break;
    case NBD_OPT_EXTENDED_HEADERS:
        ret = option_without_data(session, &session->extended);
        if (session->extended)
            session->structured = true;
        break;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        ret = have_data ? option_meta_context(session, option == NBD_OPT_SET_META_CONTEXT)
                        : option_error(session, NBD_REP_ERR_TOO_BIG, "option data too long");
        break;
    default:
        ret = option_error(session, NBD_REP_ERR_UNSUP, "unknown option");
        break;
    }
    free(session->option_data);
    session->option_data = NULL;
    if (ret < 0)
        nbd_session_out_of_memory(session);
    else if (session->input == NBD_INPUT_OPTION_DATA || session->input == NBD_INPUT_OPTION_DISCARD ||
             session->input == NBD_INPUT_OPTION_HEADER)
        session->input = NBD_INPUT_OPTION_HEADER;
}

static void begin_option(struct nbd_session *session)
{
    uint32_t option = session->option.option;
    uint32_t length = session->option.length;
    if (option == NBD_OPT_EXPORT_NAME && length > NBD_MAX_STRING) {
        nbd_session_violation(session, "NBD_OPT_EXPORT_NAME of %u bytes", length);
        return;
    }
    if (length == 0) {
        handle_option(session);
        return;
    }
    if (option_keeps_data(option) && length <= NBD_OPTION_DATA_MAX) {
        session->option_data = malloc(length);
        if (!session->option_data) {
            nbd_session_out_of_memory(session);
            return;
        }
        session->option_fill = 0;
        session->input = NBD_INPUT_OPTION_DATA;
        return;
    }
    if (length > NBD_OPTION_DISCARD_MAX) {
        nbd_session_violation(session, "%s with %u bytes of data", nbd_option_name(option), length);
        return;
    }
    session->discard_left = length;
    session->input = NBD_INPUT_OPTION_DISCARD;
}

size_t nbd_handshake_input(struct nbd_session *session, const uint8_t *data, size_t len)
{
    size_t used = 0;
    const uint8_t *message;
    switch (session->input) {
    case NBD_INPUT_CLIENT_FLAGS: {
        message = nbd_session_gather(session, data, len, NBD_CLIENT_FLAGS_SIZE, &used);
        if (!message)
            return used;
        uint32_t flags = load_be32(message);
        if (flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
            nbd_session_violation(session, "unknown client flags 0x%x", flags);
            return used;
        }
        session->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
        session->input = NBD_INPUT_OPTION_HEADER;
        return used;
    }
    case NBD_INPUT_OPTION_HEADER:
        message = nbd_session_gather(session, data, len, NBD_OPTION_HEADER_SIZE, &used);
        if (!message)
            return used;
        if (nbd_option_header_decode(message, &session->option) < 0) {
            nbd_session_violation(session, "bad option magic");
            return used;
        }
        begin_option(session);
        return used;
    case NBD_INPUT_OPTION_DATA: {
        size_t want = session->option.length - session->option_fill;
        used = len < want ? len : want;
        memcpy(session->option_data + session->option_fill, data, used);
        session->option_fill += used;
        if (session->option_fill == session->option.length)
            handle_option(session);
        return used;
    }
    case NBD_INPUT_OPTION_DISCARD:
        used = len < session->discard_left ? len : (size_t)session->discard_left;
        session->discard_left -= used;
        if (session->discard_left == 0)
            handle_option(session);
        return used;
    default:
        return 0;
    }
}
