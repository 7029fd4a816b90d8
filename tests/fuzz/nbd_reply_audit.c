/*
 * The audit is two cursors over one conversation: the input cursor parses
 * what the client sent (options, requests, payloads) and records what it
 * expects; the output cursor parses what the server sent and matches it.
 * The handshake is answered synchronously, so the input cursor waits at
 * each complete option until the output cursor has seen its final reply
 * (that is also how it learns whether GO entered transmission).  Only the
 * byte layouts come from nbd_wire.h; every judgement is made here,
 * independently of the session's code.
 */
#include "nbd_reply_audit.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/nbd/nbd_wire.h"
#include "tests/fuzz/shadow_disk.h"

/* Writable exports up to this size get a shadow of their contents. */
#define SHADOW_MAX_SIZE (16u << 20)

enum input_state {
    INPUT_CLIENT_FLAGS,
    INPUT_OPTIONS,
    INPUT_REQUESTS,
    INPUT_ENDED, /* ABORT, DISC or a violation: the session must take nothing more */
};

enum output_state {
    OUTPUT_GREETING,
    OUTPUT_OPTIONS,
    OUTPUT_TRANSMISSION,
    OUTPUT_ENDED, /* nothing more may be sent */
};

struct range {
    uint64_t start, end;
};

struct outstanding {
    uint64_t cookie;
    uint16_t type;
    uint16_t flags;
    uint64_t offset;
    uint64_t length;
    bool must_fail;      /* write to a read-only export, or beyond the end */
    uint32_t required_error; /* the only acceptable answer (NBD_ESHUTDOWN), or 0 */
    bool raced;          /* overlapped a write in flight: its outcome is not predictable */
    const uint8_t *payload; /* WRITE data, inside the input */
    bool chunked;        /* a chunk has been seen */
    bool error_seen;
    unsigned content_chunks;
    unsigned status_chunks;
    uint64_t covered;
    struct range *ranges;
    size_t range_count;
};

struct pending_option {
    bool active;
    uint32_t option;
    uint32_t length;
    const uint8_t *data;
    const struct nbd_audit_export *export; /* the export it names, NULL if unknown */
    bool saw_info_export;
    uint32_t meta_id; /* SET_META_CONTEXT: the id it handed out */
};

struct nbd_audit {
    const struct nbd_audit_export *exports;
    size_t export_count;
    bool off;   /* the client side became ambiguous: stop judging */
    bool trace; /* LUNA_FUZZ_VERBOSE: print every reply as it is judged */

    /* Input cursor. */
    enum input_state input;
    const uint8_t *in;
    size_t in_consumed, in_position;
    bool expect_closed;
    bool shut_down;
    size_t shutdown_at; /* input consumed when the server began shutting down */
    bool no_zeroes, structured, extended;
    struct pending_option option;

    /* Negotiated, as the output showed it. */
    const struct nbd_audit_export *export;
    uint32_t context_id; /* base:allocation from the last SET_META_CONTEXT, 0 if none */
    const struct nbd_audit_export *meta_export; /* the export that SET named */

    /* Output cursor. */
    enum output_state output;
    uint8_t *out;
    size_t out_length, out_capacity, out_position;
    uint64_t skip_left;          /* read data bytes still to come */
    uint64_t skip_offset;        /* export offset of the next one */
    const struct nbd_audit_export *skip_export;
    bool skip_shadowed;          /* compare them with the shadow too */
    struct shadow_disk *shadow;  /* contents of the export in use, when writable and small */

    struct outstanding *requests;
    size_t request_count, request_capacity;
};

static void audit_fail(const char *format, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void audit_fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fputs("nbd_reply_audit: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    abort();
}

static void *checked_realloc(void *pointer, size_t size)
{
    void *grown = realloc(pointer, size);
    if (!grown)
        audit_fail("out of memory");
    return grown;
}

struct nbd_audit *nbd_audit_new(const struct nbd_audit_export *exports, size_t count)
{
    struct nbd_audit *audit = calloc(1, sizeof(*audit));
    if (!audit)
        audit_fail("out of memory");
    audit->exports = exports;
    audit->export_count = count;
    audit->trace = getenv("LUNA_FUZZ_VERBOSE") != NULL;
    return audit;
}

static void forget_request(struct nbd_audit *audit, size_t index)
{
    free(audit->requests[index].ranges);
    audit->requests[index] = audit->requests[audit->request_count - 1];
    audit->request_count--;
}

void nbd_audit_free(struct nbd_audit *audit)
{
    if (!audit)
        return;
    while (audit->request_count)
        forget_request(audit, 0);
    free(audit->requests);
    free(audit->out);
    shadow_disk_free(audit->shadow);
    free(audit);
}

static const struct nbd_audit_export *find_export(const struct nbd_audit *audit,
                                                  const uint8_t *name, size_t length)
{
    if (length == 0)
        return audit->export_count ? &audit->exports[0] : NULL;
    for (size_t i = 0; i < audit->export_count; i++) {
        const char *candidate = audit->exports[i].name;
        if (strlen(candidate) == length && memcmp(candidate, name, length) == 0)
            return &audit->exports[i];
    }
    return NULL;
}

static bool valid_error(uint32_t error)
{
    switch (error) {
    case NBD_EPERM:
    case NBD_EIO:
    case NBD_ENOMEM:
    case NBD_EINVAL:
    case NBD_ENOSPC:
    case NBD_EOVERFLOW:
    case NBD_ENOTSUP:
    case NBD_ESHUTDOWN:
        return true;
    default:
        return false;
    }
}

static bool power_of_two(uint32_t value) { return value && !(value & (value - 1)); }

/* ---- input cursor ---- */

static void end_input(struct nbd_audit *audit, bool violation)
{
    audit->input = INPUT_ENDED;
    if (violation)
        audit->expect_closed = true;
}

static const struct nbd_audit_export *option_target(const struct nbd_audit *audit,
                                                    uint32_t option, const uint8_t *data,
                                                    uint32_t length)
{
    if (option == NBD_OPT_EXPORT_NAME)
        return find_export(audit, data, length);
    /* INFO and GO end in 2 bytes of request count, the meta context options in 4 of query count. */
    uint32_t trailer = option == NBD_OPT_INFO || option == NBD_OPT_GO ? 2
                       : option == NBD_OPT_SET_META_CONTEXT || option == NBD_OPT_LIST_META_CONTEXT ? 4
                                                                                                    : 0;
    if (trailer && length >= 4 + trailer) {
        uint32_t name_length = load_be32(data);
        if (name_length <= length - 4 - trailer)
            return find_export(audit, data + 4, name_length);
    }
    return NULL;
}

static bool writes_data(uint16_t type)
{
    return type == NBD_CMD_WRITE || type == NBD_CMD_TRIM || type == NBD_CMD_WRITE_ZEROES;
}

static bool observes_data(uint16_t type)
{
    return type == NBD_CMD_READ || type == NBD_CMD_BLOCK_STATUS;
}

static uint64_t range_end(uint64_t offset, uint64_t length)
{
    return length > UINT64_MAX - offset ? UINT64_MAX : offset + length;
}

/*
 * Requests in flight together run in any order: a write overlapping
 * another write, a read or a block status makes all of them unpredictable.
 */
static void mark_races(struct nbd_audit *audit, struct outstanding *request)
{
    uint64_t end = range_end(request->offset, request->length);
    for (size_t i = 0; i + 1 < audit->request_count; i++) {
        struct outstanding *other = &audit->requests[i];
        if (other->offset >= end || request->offset >= range_end(other->offset, other->length))
            continue;
        bool racing = (writes_data(request->type) &&
                       (writes_data(other->type) || observes_data(other->type))) ||
                      (observes_data(request->type) && writes_data(other->type));
        if (racing)
            request->raced = other->raced = true;
    }
}

static void record_request(struct nbd_audit *audit, uint16_t flags, uint16_t type, uint64_t cookie,
                           uint64_t offset, uint64_t length, const uint8_t *payload)
{
    for (size_t i = 0; i < audit->request_count; i++) {
        if (audit->requests[i].cookie == cookie) {
            audit->off = true; /* two requests share a cookie: replies cannot be told apart */
            return;
        }
    }
    if (audit->request_count == audit->request_capacity) {
        audit->request_capacity = audit->request_capacity ? audit->request_capacity * 2 : 16;
        audit->requests = checked_realloc(audit->requests,
                                          audit->request_capacity * sizeof(*audit->requests));
    }
    struct outstanding *request = &audit->requests[audit->request_count++];
    memset(request, 0, sizeof(*request));
    request->cookie = cookie;
    request->type = type;
    request->flags = flags;
    request->offset = offset;
    request->length = length;
    const struct nbd_audit_export *export = audit->export;
    bool writes = type == NBD_CMD_WRITE || type == NBD_CMD_TRIM || type == NBD_CMD_WRITE_ZEROES;
    if (writes && export->readonly)
        request->must_fail = true;
    bool ranged = type == NBD_CMD_READ || type == NBD_CMD_WRITE || type == NBD_CMD_TRIM ||
                  type == NBD_CMD_WRITE_ZEROES || type == NBD_CMD_BLOCK_STATUS;
    if (ranged && (offset > export->size || length > export->size - offset))
        request->must_fail = true;
    if (type > NBD_CMD_BLOCK_STATUS)
        request->must_fail = true;
    if (type == NBD_CMD_BLOCK_STATUS &&
        (length == 0 || audit->context_id == 0 || audit->meta_export != export))
        request->must_fail = true;
    request->payload = type == NBD_CMD_WRITE ? payload : NULL;
    mark_races(audit, request);
}

void nbd_audit_shutdown(struct nbd_audit *audit)
{
    audit->shut_down = true;
    audit->shutdown_at = audit->in_consumed;
}

/* One step of the input cursor; false when it must wait. */
static bool input_step(struct nbd_audit *audit)
{
    if (!audit->in)
        return false;
    const uint8_t *data = audit->in + audit->in_position;
    size_t available = audit->in_consumed - audit->in_position;
    switch (audit->input) {
    case INPUT_CLIENT_FLAGS: {
        if (available < NBD_CLIENT_FLAGS_SIZE)
            return false;
        uint32_t flags = load_be32(data);
        audit->in_position += NBD_CLIENT_FLAGS_SIZE;
        if (flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
            /* proto.md: unknown client flags MUST make the server close. */
            end_input(audit, true);
            return true;
        }
        audit->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
        audit->input = INPUT_OPTIONS;
        return true;
    }
    case INPUT_OPTIONS: {
        if (audit->option.active || available < NBD_OPTION_HEADER_SIZE)
            return false;
        if (load_be64(data) != NBD_IHAVEOPT) {
            audit->in_position += NBD_OPTION_HEADER_SIZE;
            end_input(audit, true);
            return true;
        }
        uint32_t length = load_be32(data + 12);
        if (available - NBD_OPTION_HEADER_SIZE < length)
            return false; /* the session may skip or refuse it; only a whole option is judged */
        struct pending_option *option = &audit->option;
        memset(option, 0, sizeof(*option));
        option->active = true;
        option->option = load_be32(data + 8);
        option->length = length;
        option->data = data + NBD_OPTION_HEADER_SIZE;
        option->export = option_target(audit, option->option, option->data, length);
        audit->in_position += NBD_OPTION_HEADER_SIZE + (size_t)length;
        return true;
    }
    case INPUT_REQUESTS: {
        size_t size = audit->extended ? NBD_EXTENDED_REQUEST_SIZE : NBD_REQUEST_SIZE;
        if (available < size)
            return false;
        uint32_t magic = load_be32(data);
        if (magic != (audit->extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC)) {
            audit->in_position += size;
            end_input(audit, true);
            return true;
        }
        uint16_t flags = load_be16(data + 4);
        uint16_t type = load_be16(data + 6);
        uint64_t cookie = load_be64(data + 8);
        uint64_t offset = load_be64(data + 16);
        uint64_t length = audit->extended ? load_be64(data + 24) : load_be32(data + 24);
        if (type == NBD_CMD_DISC) {
            audit->in_position += size;
            end_input(audit, false);
            return true;
        }
        uint64_t payload = 0;
        if (audit->extended ? (flags & NBD_CMD_FLAG_PAYLOAD_LEN) : type == NBD_CMD_WRITE)
            payload = length;
        if (available - size < payload)
            return false; /* a request is judged once its payload is in */
        bool after_shutdown = audit->shut_down && audit->in_position >= audit->shutdown_at;
        audit->in_position += size + (size_t)payload;
        record_request(audit, flags, type, cookie, offset, length, data + size);
        if (after_shutdown && !audit->off)
            audit->requests[audit->request_count - 1].required_error = NBD_ESHUTDOWN;
        return true;
    }
    case INPUT_ENDED:
        if (audit->in_consumed != audit->in_position)
            audit_fail("session consumed %zu bytes after the input ended (ABORT, DISC or violation)",
                       audit->in_consumed - audit->in_position);
        return false;
    }
    return false;
}

/* ---- output cursor: handshake ---- */

static void begin_transmission(struct nbd_audit *audit, const struct nbd_audit_export *export)
{
    audit->export = export;
    /* The fuzz target resets writable exports to zeroes before every input. */
    if (!export->readonly && !export->byte_at && export->size <= SHADOW_MAX_SIZE) {
        audit->shadow = shadow_disk_new(export->size);
        if (!audit->shadow)
            audit_fail("out of memory");
    }
    audit->output = OUTPUT_TRANSMISSION;
    audit->input = INPUT_REQUESTS;
}

static void check_transmission_flags(const struct nbd_audit *audit,
                                     const struct nbd_audit_export *export, uint16_t flags)
{
    if (!(flags & NBD_FLAG_HAS_FLAGS))
        audit_fail("transmission flags 0x%x without NBD_FLAG_HAS_FLAGS", flags);
    if (!!(flags & NBD_FLAG_READ_ONLY) != export->readonly)
        audit_fail("export '%s': READ_ONLY flag %s for a %s export", export->name,
                   flags & NBD_FLAG_READ_ONLY ? "set" : "clear",
                   export->readonly ? "read-only" : "writable");
    if ((flags & NBD_FLAG_SEND_DF) && !audit->structured)
        audit_fail("NBD_FLAG_SEND_DF advertised without structured replies");
    if (flags & NBD_FLAG_BLOCK_STATUS_PAYLOAD)
        audit_fail("NBD_FLAG_BLOCK_STATUS_PAYLOAD advertised but never negotiable here");
    if (flags & 0xe000)
        audit_fail("reserved transmission flags set: 0x%x", flags);
}

/* NBD_OPT_EXPORT_NAME has no option reply: size, flags, maybe 124 zeroes. */
static bool export_name_reply(struct nbd_audit *audit, const uint8_t *data, size_t available)
{
    if (available >= 8 && load_be64(data) == NBD_OPTION_REPLY_MAGIC)
        audit_fail("option reply sent to NBD_OPT_EXPORT_NAME");
    size_t size = NBD_EXPORT_NAME_REPLY_SIZE + (audit->no_zeroes ? 0 : NBD_EXPORT_NAME_ZEROES);
    if (available < size)
        return false;
    const struct nbd_audit_export *export = audit->option.export;
    if (!export)
        audit_fail("NBD_OPT_EXPORT_NAME for an unknown export was answered");
    if (audit->extended)
        audit_fail("NBD_OPT_EXPORT_NAME answered after extended headers were negotiated");
    if (load_be64(data) != export->size)
        audit_fail("NBD_OPT_EXPORT_NAME '%s': size %llu, expected %llu", export->name,
                   (unsigned long long)load_be64(data), (unsigned long long)export->size);
    check_transmission_flags(audit, export, load_be16(data + 8));
    for (size_t i = NBD_EXPORT_NAME_REPLY_SIZE; i < size; i++)
        if (data[i] != 0)
            audit_fail("NBD_OPT_EXPORT_NAME reply: nonzero padding byte");
    audit->out_position += size;
    audit->option.active = false;
    begin_transmission(audit, export);
    return true;
}

static void check_info(struct nbd_audit *audit, const uint8_t *payload, uint32_t length)
{
    struct pending_option *option = &audit->option;
    if (option->option != NBD_OPT_INFO && option->option != NBD_OPT_GO)
        audit_fail("NBD_REP_INFO in reply to option %u", option->option);
    if (length < 2)
        audit_fail("NBD_REP_INFO of %u bytes", length);
    const struct nbd_audit_export *export = option->export;
    if (!export)
        audit_fail("NBD_REP_INFO for an export that does not exist");
    uint16_t type = load_be16(payload);
    switch (type) {
    case NBD_INFO_EXPORT:
        if (length != 12)
            audit_fail("NBD_INFO_EXPORT of %u bytes", length);
        if (load_be64(payload + 2) != export->size)
            audit_fail("NBD_INFO_EXPORT '%s': size %llu, expected %llu", export->name,
                       (unsigned long long)load_be64(payload + 2),
                       (unsigned long long)export->size);
        check_transmission_flags(audit, export, load_be16(payload + 10));
        option->saw_info_export = true;
        break;
    case NBD_INFO_NAME:
    case NBD_INFO_DESCRIPTION:
        if (length - 2 > NBD_MAX_STRING)
            audit_fail("NBD_INFO string of %u bytes", length - 2);
        if (memchr(payload + 2, '\0', length - 2))
            audit_fail("NBD_INFO string contains NUL");
        break;
    case NBD_INFO_BLOCK_SIZE: {
        if (length != 14)
            audit_fail("NBD_INFO_BLOCK_SIZE of %u bytes", length);
        uint32_t minimum = load_be32(payload + 2);
        uint32_t preferred = load_be32(payload + 6);
        uint32_t maximum = load_be32(payload + 10);
        if (!power_of_two(minimum) || minimum > 65536)
            audit_fail("minimum block size %u", minimum);
        if (!power_of_two(preferred) || preferred < minimum || preferred < 512)
            audit_fail("preferred block size %u (minimum %u)", preferred, minimum);
        if (maximum < preferred)
            audit_fail("maximum payload %u below preferred block size %u", maximum, preferred);
        break;
    }
    default:
        audit_fail("unknown NBD_REP_INFO type %u", type);
    }
}

static void check_meta_context(struct nbd_audit *audit, const uint8_t *payload, uint32_t length)
{
    uint32_t option = audit->option.option;
    if (option != NBD_OPT_LIST_META_CONTEXT && option != NBD_OPT_SET_META_CONTEXT)
        audit_fail("NBD_REP_META_CONTEXT in reply to option %u", option);
    if (!audit->structured)
        audit_fail("NBD_REP_META_CONTEXT without structured replies");
    if (length <= 4 || length - 4 > NBD_MAX_STRING)
        audit_fail("NBD_REP_META_CONTEXT of %u bytes", length);
    uint32_t id = load_be32(payload);
    if (option == NBD_OPT_SET_META_CONTEXT) {
        if (id == 0)
            audit_fail("NBD_OPT_SET_META_CONTEXT handed out context id 0");
        if (length - 4 != strlen(NBD_META_CONTEXT_ALLOCATION) ||
            memcmp(payload + 4, NBD_META_CONTEXT_ALLOCATION, length - 4) != 0)
            audit_fail("SET_META_CONTEXT selected '%.*s', which was never offered", (int)(length - 4),
                       (const char *)payload + 4);
        audit->option.meta_id = id;
    }
}

static void option_final(struct nbd_audit *audit, uint32_t type)
{
    struct pending_option *option = &audit->option;
    option->active = false;
    if (option->option == NBD_OPT_SET_META_CONTEXT) {
        /* A SET replaces the previous selection, even when it fails. */
        audit->context_id = type == NBD_REP_ACK ? option->meta_id : 0;
        audit->meta_export = audit->context_id ? option->export : NULL;
    }
    if (type != NBD_REP_ACK)
        return;
    switch (option->option) {
    case NBD_OPT_STRUCTURED_REPLY:
        audit->structured = true;
        break;
    case NBD_OPT_EXTENDED_HEADERS:
        audit->structured = audit->extended = true;
        break;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        if (!option->saw_info_export)
            audit_fail("%s acknowledged without NBD_INFO_EXPORT",
                       option->option == NBD_OPT_GO ? "NBD_OPT_GO" : "NBD_OPT_INFO");
        if (option->option == NBD_OPT_GO)
            begin_transmission(audit, option->export);
        break;
    case NBD_OPT_ABORT:
        audit->output = OUTPUT_ENDED;
        end_input(audit, false);
        break;
    default:
        break;
    }
}

static bool option_reply(struct nbd_audit *audit)
{
    const uint8_t *data = audit->out + audit->out_position;
    size_t available = audit->out_length - audit->out_position;
    if (!audit->option.active) {
        if (available)
            audit_fail("%zu bytes sent during the handshake with no option outstanding", available);
        return false;
    }
    if (audit->option.option == NBD_OPT_EXPORT_NAME)
        return export_name_reply(audit, data, available);
    if (available < NBD_OPTION_REPLY_HEADER_SIZE)
        return false;
    if (load_be64(data) != NBD_OPTION_REPLY_MAGIC)
        audit_fail("option reply magic 0x%016llx", (unsigned long long)load_be64(data));
    uint32_t option = load_be32(data + 8);
    uint32_t type = load_be32(data + 12);
    uint32_t length = load_be32(data + 16);
    if (option != audit->option.option)
        audit_fail("reply for option %u while option %u is outstanding", option,
                   audit->option.option);
    if (length > (1u << 20))
        audit_fail("option reply of %u bytes", length);
    if (available - NBD_OPTION_REPLY_HEADER_SIZE < length)
        return false;
    const uint8_t *payload = data + NBD_OPTION_REPLY_HEADER_SIZE;
    audit->out_position += NBD_OPTION_REPLY_HEADER_SIZE + (size_t)length;
    if (type & NBD_REP_FLAG_ERROR) {
        if (type > NBD_REP_ERR_EXT_HEADER_REQD)
            audit_fail("unknown option error 0x%x", type);
        if (length > NBD_MAX_STRING)
            audit_fail("option error message of %u bytes", length);
        if (option == NBD_OPT_ABORT)
            audit_fail("NBD_OPT_ABORT refused");
        option_final(audit, type);
        return true;
    }
    switch (type) {
    case NBD_REP_ACK:
        if (length != 0)
            audit_fail("NBD_REP_ACK with %u bytes of data", length);
        option_final(audit, type);
        return true;
    case NBD_REP_SERVER:
        if (option != NBD_OPT_LIST)
            audit_fail("NBD_REP_SERVER in reply to option %u", option);
        if (length < 4 || load_be32(payload) > length - 4)
            audit_fail("malformed NBD_REP_SERVER");
        return true;
    case NBD_REP_INFO:
        check_info(audit, payload, length);
        return true;
    case NBD_REP_META_CONTEXT:
        check_meta_context(audit, payload, length);
        return true;
    default:
        audit_fail("unknown option reply type 0x%x", type);
    }
}

/* ---- output cursor: transmission ---- */

static size_t find_request(const struct nbd_audit *audit, uint64_t cookie)
{
    for (size_t i = 0; i < audit->request_count; i++)
        if (audit->requests[i].cookie == cookie)
            return i;
    audit_fail("reply for cookie 0x%llx, which has no request outstanding",
               (unsigned long long)cookie);
}

static void check_error(const struct outstanding *request, uint32_t error)
{
    if (request->required_error && error != request->required_error)
        audit_fail("cookie 0x%llx: error %u, but requests after shutdown get %u",
                   (unsigned long long)request->cookie, error, request->required_error);
    if (!valid_error(error))
        audit_fail("cookie 0x%llx: error %u is not one the protocol defines",
                   (unsigned long long)request->cookie, error);
}

/* Reply complete: judge the whole of it. */
static void request_done(struct nbd_audit *audit, size_t index, bool failed)
{
    struct outstanding *request = &audit->requests[index];
    if (request->required_error && !failed)
        audit_fail("cookie 0x%llx: command %u received after shutdown succeeded",
                   (unsigned long long)request->cookie, request->type);
    if (request->must_fail && !failed)
        audit_fail("cookie 0x%llx: command %u (offset %llu length %llu) succeeded but must fail",
                   (unsigned long long)request->cookie, request->type,
                   (unsigned long long)request->offset, (unsigned long long)request->length);
    if (!failed && request->chunked && request->type == NBD_CMD_READ &&
        request->covered != request->length)
        audit_fail("cookie 0x%llx: read of %llu bytes answered with %llu", (unsigned long long)request->cookie,
                   (unsigned long long)request->length, (unsigned long long)request->covered);
    if (!failed && request->type == NBD_CMD_BLOCK_STATUS && request->status_chunks != 1)
        audit_fail("cookie 0x%llx: block status answered with %u status chunks",
                   (unsigned long long)request->cookie, request->status_chunks);
    if (audit->shadow && writes_data(request->type)) {
        /* A trim may or may not zero; a failed write may have written part. */
        if (failed || request->raced || request->type == NBD_CMD_TRIM)
            shadow_disk_forget(audit->shadow, request->offset, request->length);
        else
            shadow_disk_set(audit->shadow, request->offset, request->payload, request->length);
    }
    forget_request(audit, index);
}

static void start_data(struct nbd_audit *audit, const struct outstanding *request, uint64_t offset,
                       uint64_t length)
{
    audit->skip_left = length;
    audit->skip_offset = offset;
    audit->skip_export = audit->export;
    audit->skip_shadowed = audit->shadow && !request->raced;
}

/* Holes and zero extents read as zeroes: no known byte there may be anything else. */
static void check_zeroes(const struct nbd_audit *audit, const struct outstanding *request,
                         uint64_t offset, uint64_t length, const char *what)
{
    uint64_t mismatch;
    uint8_t expected;
    if (audit->export->byte_at)
        for (uint64_t i = 0; i < length; i++)
            if (audit->export->byte_at(offset + i) != 0)
                audit_fail("%s over nonzero data at %llu of '%s'", what,
                           (unsigned long long)(offset + i), audit->export->name);
    if (audit->shadow && !request->raced &&
        !shadow_disk_matches(audit->shadow, offset, NULL, length, &mismatch, &expected))
        audit_fail("%s over offset %llu of '%s', which holds 0x%02x (cookie 0x%llx)", what,
                   (unsigned long long)mismatch, audit->export->name, expected,
                   (unsigned long long)request->cookie);
}

static void content_range(struct outstanding *request, uint64_t offset, uint64_t length,
                          const char *what)
{
    if (request->type != NBD_CMD_READ)
        audit_fail("cookie 0x%llx: %s chunk for command %u", (unsigned long long)request->cookie,
                   what, request->type);
    if (length == 0)
        audit_fail("cookie 0x%llx: empty %s chunk", (unsigned long long)request->cookie, what);
    if (offset < request->offset || offset - request->offset > request->length ||
        length > request->length - (offset - request->offset))
        audit_fail("cookie 0x%llx: %s [%llu, +%llu) outside the request [%llu, +%llu)",
                   (unsigned long long)request->cookie, what, (unsigned long long)offset,
                   (unsigned long long)length, (unsigned long long)request->offset,
                   (unsigned long long)request->length);
    for (size_t i = 0; i < request->range_count; i++)
        if (offset < request->ranges[i].end && request->ranges[i].start < offset + length)
            audit_fail("cookie 0x%llx: %s [%llu, +%llu) overlaps an earlier chunk",
                       (unsigned long long)request->cookie, what, (unsigned long long)offset,
                       (unsigned long long)length);
    request->ranges = checked_realloc(request->ranges,
                                      (request->range_count + 1) * sizeof(*request->ranges));
    request->ranges[request->range_count++] = (struct range){offset, offset + length};
    request->covered += length;
    request->content_chunks++;
    if ((request->flags & NBD_CMD_FLAG_DF) && request->content_chunks > 1)
        audit_fail("cookie 0x%llx: read with NBD_CMD_FLAG_DF fragmented", (unsigned long long)request->cookie);
}

static void check_block_status(const struct nbd_audit *audit, struct outstanding *request,
                               const uint8_t *payload, uint64_t length, bool wide)
{
    if (request->type != NBD_CMD_BLOCK_STATUS)
        audit_fail("cookie 0x%llx: block status chunk for command %u",
                   (unsigned long long)request->cookie, request->type);
    size_t prefix = wide ? 8 : 4, descriptor = wide ? 16 : 8;
    if (length < prefix + descriptor || (length - prefix) % descriptor)
        audit_fail("cookie 0x%llx: block status chunk of %llu bytes", (unsigned long long)request->cookie,
                   (unsigned long long)length);
    uint64_t count = (length - prefix) / descriptor;
    if (load_be32(payload) != audit->context_id)
        audit_fail("block status for context %u, negotiated %u", load_be32(payload), audit->context_id);
    if (wide && load_be32(payload + 4) != count)
        audit_fail("BLOCK_STATUS_EXT count %u with %llu descriptors", load_be32(payload + 4),
                   (unsigned long long)count);
    if ((request->flags & NBD_CMD_FLAG_REQ_ONE) && count != 1)
        audit_fail("block status with REQ_ONE returned %llu extents", (unsigned long long)count);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *entry = payload + prefix + i * descriptor;
        uint64_t extent = wide ? load_be64(entry) : load_be32(entry + 0);
        uint64_t flags = wide ? load_be64(entry + 8) : load_be32(entry + 4);
        if (audit->trace)
            fprintf(stderr, "audit:   extent %llu: length %llu flags 0x%llx\n", (unsigned long long)i,
                    (unsigned long long)extent, (unsigned long long)flags);
        if (extent == 0)
            audit_fail("block status extent %llu of length 0", (unsigned long long)i);
        if (flags & ~(uint64_t)(NBD_STATE_HOLE | NBD_STATE_ZERO))
            audit_fail("base:allocation flags 0x%llx", (unsigned long long)flags);
        if (i + 1 < count && sum + extent >= request->length)
            audit_fail("block status extents beyond the request before the last one");
        if (flags & NBD_STATE_ZERO) {
            /* Only the requested range: the rest may be changing under other requests. */
            uint64_t in_range = sum < request->length ? request->length - sum : 0;
            check_zeroes(audit, request, request->offset + sum, extent < in_range ? extent : in_range,
                         "block status NBD_STATE_ZERO");
        }
        sum += extent;
    }
    if ((request->flags & NBD_CMD_FLAG_REQ_ONE) && sum > request->length)
        audit_fail("REQ_ONE extent of %llu bytes for a request of %llu", (unsigned long long)sum,
                   (unsigned long long)request->length);
    request->status_chunks++;
}

/* A structured or extended chunk whose header is at data. */
static bool chunk(struct nbd_audit *audit, const uint8_t *data, size_t available, bool wide)
{
    size_t header_size = wide ? NBD_EXTENDED_REPLY_SIZE : NBD_STRUCTURED_REPLY_SIZE;
    if (available < header_size)
        return false;
    uint16_t flags = load_be16(data + 4);
    uint16_t type = load_be16(data + 6);
    uint64_t cookie = load_be64(data + 8);
    uint64_t length = wide ? load_be64(data + 24) : load_be32(data + 16);
    size_t index = find_request(audit, cookie);
    struct outstanding *request = &audit->requests[index];
    if (wide && load_be64(data + 16) != request->offset)
        audit_fail("cookie 0x%llx: extended reply offset %llu, request offset %llu",
                   (unsigned long long)cookie, (unsigned long long)load_be64(data + 16),
                   (unsigned long long)request->offset);
    if (flags & ~(uint16_t)NBD_REPLY_FLAG_DONE)
        audit_fail("reply chunk flags 0x%x", flags);
    if (length > UINT32_MAX)
        audit_fail("reply chunk of %llu bytes", (unsigned long long)length);
    /* Everything but read data is judged whole; data streams through the skip state. */
    uint64_t fixed = type == NBD_REPLY_TYPE_OFFSET_DATA ? 8 : length;
    if (fixed > (1u << 20))
        audit_fail("reply chunk type %u of %llu bytes", type, (unsigned long long)length);
    if (available - header_size < fixed)
        return false;
    const uint8_t *payload = data + header_size;
    audit->out_position += header_size + (size_t)fixed;
    if (audit->trace)
        fprintf(stderr, "audit: cookie 0x%llx chunk type 0x%x flags 0x%x length %llu\n",
                (unsigned long long)cookie, type, flags, (unsigned long long)length);
    request->chunked = true;
    switch (type) {
    case NBD_REPLY_TYPE_NONE:
        if (length != 0 || !(flags & NBD_REPLY_FLAG_DONE))
            audit_fail("NONE chunk of %llu bytes, flags 0x%x", (unsigned long long)length, flags);
        break;
    case NBD_REPLY_TYPE_OFFSET_DATA:
        if (length < 9)
            audit_fail("OFFSET_DATA chunk of %llu bytes", (unsigned long long)length);
        content_range(request, load_be64(payload), length - 8, "OFFSET_DATA");
        start_data(audit, request, load_be64(payload), length - 8);
        break;
    case NBD_REPLY_TYPE_OFFSET_HOLE: {
        if (length != 12)
            audit_fail("OFFSET_HOLE chunk of %llu bytes", (unsigned long long)length);
        uint64_t offset = load_be64(payload);
        uint32_t size = load_be32(payload + 8);
        content_range(request, offset, size, "OFFSET_HOLE");
        check_zeroes(audit, request, offset, size, "OFFSET_HOLE");
        break;
    }
    case NBD_REPLY_TYPE_BLOCK_STATUS:
    case NBD_REPLY_TYPE_BLOCK_STATUS_EXT:
        if ((type == NBD_REPLY_TYPE_BLOCK_STATUS_EXT) != audit->extended)
            audit_fail("block status chunk type %u with extended headers %s", type,
                       audit->extended ? "on" : "off");
        check_block_status(audit, request, payload, length, wide);
        break;
    case NBD_REPLY_TYPE_ERROR:
    case NBD_REPLY_TYPE_ERROR_OFFSET: {
        uint64_t tail = type == NBD_REPLY_TYPE_ERROR ? 0 : 8;
        if (length < 6 + tail)
            audit_fail("error chunk of %llu bytes", (unsigned long long)length);
        uint32_t error = load_be32(payload);
        if (error == 0)
            audit_fail("error chunk with error 0");
        check_error(request, error);
        if (load_be16(payload + 4) != length - 6 - tail)
            audit_fail("error chunk message length %u in %llu bytes", load_be16(payload + 4),
                       (unsigned long long)length);
        request->error_seen = true;
        break;
    }
    default:
        audit_fail("unknown reply chunk type 0x%x", type);
    }
    if (flags & NBD_REPLY_FLAG_DONE)
        request_done(audit, index, request->error_seen);
    return true;
}

static bool simple_reply(struct nbd_audit *audit, const uint8_t *data, size_t available)
{
    if (available < NBD_SIMPLE_REPLY_SIZE)
        return false;
    uint32_t error = load_be32(data + 4);
    uint64_t cookie = load_be64(data + 8);
    if (audit->extended)
        audit_fail("simple reply (cookie 0x%llx) with extended headers negotiated",
                   (unsigned long long)cookie);
    size_t index = find_request(audit, cookie);
    struct outstanding *request = &audit->requests[index];
    if (audit->structured && request->type == NBD_CMD_READ)
        audit_fail("simple reply to NBD_CMD_READ (cookie 0x%llx) with structured replies",
                   (unsigned long long)cookie);
    if (request->chunked)
        audit_fail("simple reply after chunks for cookie 0x%llx", (unsigned long long)cookie);
    if (error)
        check_error(request, error);
    audit->out_position += NBD_SIMPLE_REPLY_SIZE;
    if (audit->trace)
        fprintf(stderr, "audit: cookie 0x%llx simple reply error %u\n", (unsigned long long)cookie,
                error);
    if (!error && request->type == NBD_CMD_READ)
        start_data(audit, request, request->offset, request->length);
    request_done(audit, index, error != 0);
    return true;
}

/* Read data: compared with the export when its contents are known. */
static bool skip_data(struct nbd_audit *audit)
{
    size_t available = audit->out_length - audit->out_position;
    if (available == 0)
        return false;
    size_t n = audit->skip_left < available ? (size_t)audit->skip_left : available;
    const struct nbd_audit_export *export = audit->skip_export;
    if (audit->trace) {
        fprintf(stderr, "audit:   data at %llu:", (unsigned long long)audit->skip_offset);
        for (size_t i = 0; i < n && i < 16; i++)
            fprintf(stderr, " %02x", audit->out[audit->out_position + i]);
        fputc('\n', stderr);
    }
    if (export->byte_at) {
        const uint8_t *data = audit->out + audit->out_position;
        for (size_t i = 0; i < n; i++)
            if (data[i] != export->byte_at(audit->skip_offset + i))
                audit_fail("read data at offset %llu of '%s': 0x%02x, expected 0x%02x",
                           (unsigned long long)(audit->skip_offset + i), export->name, data[i],
                           export->byte_at(audit->skip_offset + i));
    }
    uint64_t mismatch;
    uint8_t expected;
    if (audit->skip_shadowed &&
        !shadow_disk_matches(audit->shadow, audit->skip_offset, audit->out + audit->out_position, n,
                             &mismatch, &expected))
        audit_fail("read data at offset %llu of '%s': 0x%02x, expected 0x%02x",
                   (unsigned long long)mismatch, export->name,
                   audit->out[audit->out_position + (mismatch - audit->skip_offset)], expected);
    audit->out_position += n;
    audit->skip_offset += n;
    audit->skip_left -= n;
    return true;
}

static bool output_step(struct nbd_audit *audit)
{
    if (!audit->out)
        return false;
    const uint8_t *data = audit->out + audit->out_position;
    size_t available = audit->out_length - audit->out_position;
    switch (audit->output) {
    case OUTPUT_GREETING:
        if (available < NBD_GREETING_SIZE)
            return false;
        if (load_be64(data) != NBD_MAGIC || load_be64(data + 8) != NBD_IHAVEOPT)
            audit_fail("bad greeting");
        if (load_be16(data + 16) & ~(uint16_t)(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
            audit_fail("greeting flags 0x%x", load_be16(data + 16));
        audit->out_position += NBD_GREETING_SIZE;
        audit->output = OUTPUT_OPTIONS;
        return true;
    case OUTPUT_OPTIONS:
        return option_reply(audit);
    case OUTPUT_TRANSMISSION:
        if (audit->skip_left)
            return skip_data(audit);
        if (available < 4)
            return false;
        switch (load_be32(data)) {
        case NBD_SIMPLE_REPLY_MAGIC:
            return simple_reply(audit, data, available);
        case NBD_STRUCTURED_REPLY_MAGIC:
            if (!audit->structured || audit->extended)
                audit_fail("structured reply chunk without structured replies negotiated");
            return chunk(audit, data, available, false);
        case NBD_EXTENDED_REPLY_MAGIC:
            if (!audit->extended)
                audit_fail("extended reply chunk without extended headers negotiated");
            return chunk(audit, data, available, true);
        default:
            audit_fail("reply magic 0x%08x", load_be32(data));
        }
    case OUTPUT_ENDED:
        if (available)
            audit_fail("%zu bytes sent after the session ended", available);
        return false;
    }
    return false;
}

/* Input runs ahead of output: a reply can only follow the request it answers. */
static void pump(struct nbd_audit *audit)
{
    for (;;) {
        while (!audit->off && input_step(audit))
            ;
        if (audit->off || !output_step(audit))
            return;
    }
}

void nbd_audit_input(struct nbd_audit *audit, const uint8_t *input, size_t consumed)
{
    if (audit->off)
        return;
    if (consumed < audit->in_consumed)
        audit_fail("consumed input went backwards");
    audit->in = input;
    audit->in_consumed = consumed;
    pump(audit);
}

void nbd_audit_output(struct nbd_audit *audit, const uint8_t *data, size_t length)
{
    /* In slices, so that big read data never has to be held whole. */
    while (length && !audit->off) {
        if (audit->out_position) {
            memmove(audit->out, audit->out + audit->out_position,
                    audit->out_length - audit->out_position);
            audit->out_length -= audit->out_position;
            audit->out_position = 0;
        }
        size_t n = length < 65536 ? length : 65536;
        if (audit->out_length + n > audit->out_capacity) {
            audit->out_capacity = audit->out_length + n;
            audit->out = checked_realloc(audit->out, audit->out_capacity);
        }
        memcpy(audit->out + audit->out_length, data, n);
        audit->out_length += n;
        data += n;
        length -= n;
        pump(audit);
    }
}

void nbd_audit_finish(struct nbd_audit *audit, bool drained, bool closed)
{
    if (audit->off)
        return;
    pump(audit);
    if (audit->expect_closed && !closed)
        audit_fail("the client violated the protocol but the session did not close");
    if (!drained || closed)
        return;
    if (audit->out_position != audit->out_length || audit->skip_left)
        audit_fail("output ends inside a message (%zu bytes unparsed, %llu data bytes missing)",
                   audit->out_length - audit->out_position, (unsigned long long)audit->skip_left);
    if (audit->option.active)
        audit_fail("option %u was never answered", audit->option.option);
    if (audit->request_count)
        audit_fail("%zu requests never answered (first: cookie 0x%llx command %u)",
                   audit->request_count, (unsigned long long)audit->requests[0].cookie,
                   audit->requests[0].type);
}
