/*
 * fuzz_world: what the session fuzz targets (fuzz_nbd_session,
 * fuzz_iscsi_session) share, so both drive their protocol the same way.
 *
 * The world: exports over temp raw files on a real libev loop and
 * aio_context, made once per process; the writable files are reset to
 * holes before every input, so a crash reproduces from its file alone.
 *
 * The run: one session per input, fed the way server/connection.c feeds
 * socket data (at most its 16 KiB input buffer held, unconsumed bytes
 * offered again, payloads copied straight into the session's payload
 * target), in chunks the input's prefix chooses, then ended one of four
 * ways.  Besides the sanitizers, it checks the parts of the
 * protocols/session.h contract a crash would not reveal: the session
 * never stalls with input offered, never wedges (active, nothing in
 * flight or queued, yet refusing input), never wakes after free, and
 * leaves nothing pending on the aio_context.  What the session says is
 * the target's to judge (fuzz_protocol.output and the other hooks).
 */
#ifndef LUNA_TESTS_FUZZ_FUZZ_WORLD_H
#define LUNA_TESTS_FUZZ_FUZZ_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/bdev.h"
#include "protocols/session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Byte 0 of an input: the run's shape.  Bits 3 and 4 are the target's own
 * (FUZZ_SHAPE_TARGET_BITS); the rest mean the same in every target, so
 * one corpus layout serves both.
 */
enum fuzz_shape_bits {
    FUZZ_SHAPE_CHUNK_MASK = 0x03,   /* 0: one chunk; 1..3: chunks of at most 8, 64, 512 bytes */
    FUZZ_SHAPE_DRAIN_EACH = 0x04,   /* run the loop to idle after every chunk (else one non-blocking pass) */
    FUZZ_SHAPE_TARGET_BITS = 0x18,
    FUZZ_SHAPE_END_SHIFT = 5,       /* two bits: how the session ends (enum fuzz_ending) */
    FUZZ_SHAPE_END_MASK = 0x60,
    FUZZ_SHAPE_KEEP_OUTPUT = 0x80,  /* leave replies queued until the end (lent buffers outlive requests) */
};

enum fuzz_ending {
    FUZZ_END_DRAIN_THEN_FREE, /* the client vanished after everything was answered */
    FUZZ_END_FREE_IN_FLIGHT,  /* the client vanished mid-request: detached completions */
    FUZZ_END_INPUT_CLOSED,    /* end of stream, then drain as the server does */
    FUZZ_END_SHUTDOWN,        /* SIGTERM halfway through the input, then drain */
};

/* Byte 0 the shape, byte 1 the seed of the chunk sizes; the rest is what the client sends. */
enum { FUZZ_PREFIX_SIZE = 2 };

struct fuzz_world {
    const char *name; /* the target's: message prefix and temp file names */
    struct ev_loop *loop;
    struct aio_context *ctx;
    struct export_table *table;
    /* Writable exports' files, reset to holes before each input. */
    int reset_fds[4];
    uint64_t reset_sizes[4];
    unsigned reset_count;
};

/* One per process: the exports outlive the inputs (opening them per input would dominate the run). */
extern struct fuzz_world fuzz_world;

/* Prints "<target name>: message" and aborts, so libFuzzer keeps the input. */
void fuzz_fail(const char *format, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* The contents of pattern-filled exports, for targets that check what reads return. */
uint8_t fuzz_pattern_byte(uint64_t offset);

/* Loop, aio_context and an empty export table; log level ERROR unless LUNA_FUZZ_VERBOSE is set. */
void fuzz_world_init(const char *name);

struct fuzz_export {
    const char *name;
    const char *description; /* may be NULL */
    uint64_t size;
    bool pattern;            /* filled with fuzz_pattern_byte; else all holes */
    bool readonly;
    enum bdev_cache_mode cache; /* 0: the default (writeback) */
    enum bdev_aio_engine aio;   /* 0: the default */
};

/* Opens it over a fresh temp file and adds it to the table; writable ones are reset before each input. */
void fuzz_world_add_export(const struct fuzz_export *export);

/*
 * What every input starts with: false when it is too short for the
 * prefix (nothing to run); else the world is made by init (the target's:
 * fuzz_world_init, then its exports) the first time, and reset.
 */
bool fuzz_world_begin(size_t size, void (*init)(void));

/* What the run needs to know of the target's protocol and checks. */
struct fuzz_protocol {
    const struct session_protocol *session;
    const char *work;       /* what inflight() counts, for messages: "requests", "commands" */
    /* A payload still arriving counts in inflight(), and shutdown waits for it (NBD). */
    bool payload_in_flight;
    /* Fail when wake fires inside input(): the contract allows it from completions only. */
    bool wake_only_from_completions;
    /* Every byte the session queued, in order (to the target's audit, then gone). */
    void (*output)(void *checker, const uint8_t *data, size_t length);
    /* Optional: after each feeding pass, the first consumed bytes of the input are taken. */
    void (*consumed)(void *checker, const uint8_t *input, size_t consumed);
    /* Optional: the server began shutting down (before any further input is offered). */
    void (*shutdown)(void *checker);
    /* Optional: the ending is over and all output handed over; the session is still alive. */
    void (*finished)(void *checker, bool drained, bool closed);
};

struct fuzz_run {
    const struct fuzz_protocol *protocol;
    void *checker;         /* the protocol hooks' argument */
    void *session;         /* made by the target, with fuzz_session_ops and the run as opaque */
    struct send_queue *out;
    uint8_t shape;
    uint32_t random_state; /* chunk sizes: a pure function of the input */
    const uint8_t *input;  /* the client's bytes, after the prefix */
    size_t size;
    size_t position, end;  /* consumed by the session; delivered so far */
    bool in_input;         /* inside input(): wake must not fire */
    bool shut_down;
    bool freed;
};

/* The session's ops: wake checks the contract (opaque: the run). */
extern const struct session_ops fuzz_session_ops;

/*
 * A run from the input's prefix (FUZZ_PREFIX_SIZE bytes), with its send
 * queue made; the target then makes run->session over run->out, with
 * &fuzz_session_ops and the run as opaque.
 */
void fuzz_run_init(struct fuzz_run *run, const struct fuzz_protocol *protocol, void *checker,
                   const uint8_t *prefix);

/* Offer input in chunks as reads from a socket would deliver them, then end the session as the shape says. */
void fuzz_run_session(struct fuzz_run *run, const uint8_t *input, size_t size);

#endif
