/*
 * img: what luna-img's verbs share: qemu-img's size syntax, -o option
 * lists, and the "luna-img: message" error convention.
 *
 * The parsers are pure (no printing, no exit) so the unit tests drive them
 * directly; the verbs print and choose exit codes.
 */
#ifndef LUNA_BLOCK_IMG_IMG_H
#define LUNA_BLOCK_IMG_IMG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/bdev.h"

#define IMG_PROGRAM "luna-img"

/*
 * qemu-img's sizes: a number (decimal fraction allowed with a suffix, or
 * 0x hex), then an optional suffix b/B (bytes), k/K, M, G, T, P, E (powers of
 * 1024; any case).  0 or -EINVAL (syntax, negative), -ERANGE (overflow).
 */
int img_parse_size(const char *text, uint64_t *out);

/* on/off as QEMU's boolean options take them (also yes/no, true/false). */
int img_parse_bool(const char *text, bool *out);

struct img_option {
    char *key;
    char *value;
    bool used; /* claimed by the format: unclaimed keys are "Invalid parameter" */
};

struct img_options {
    struct img_option *items;
    size_t count;
    bool help; /* "help" or "?" was given */
};

/*
 * Append "key=value,key=value" to list (a later -o adds to earlier ones;
 * a repeated key: the last wins).  ",," is a literal comma inside a value,
 * as in QEMU.  0, or -EINVAL with a malloc'd message.
 */
int img_options_parse(struct img_options *list, const char *text, char **error_message);

/* The value of the last key given, marking it used; NULL when absent. */
const char *img_options_take(struct img_options *list, const char *key);

/* The first key no format claimed, or NULL. */
const char *img_options_unused(const struct img_options *list);

void img_options_free(struct img_options *list);

/* "luna-img: message" on stderr. */
void img_error(const char *format, ...) __attribute__((format(printf, 1, 2)));

/*
 * getopt_long returned ':' or '?': print qemu-img's message for the
 * option at argv[optind - 1] and the --help hint.  Returns 1 (the exit code).
 */
int img_option_error(int c, char **argv, int optind);

/* --output=human|json: 0 with *json set, or 1 (the exit code) after qemu-img's message. */
int img_parse_output(const char *text, bool *json);

/* -o LIST added to list: 0, or 1 (the exit code) after the parser's message. */
int img_options_add(struct img_options *list, const char *text);

/*
 * What bdev_open said about path without the leading "path: " it repeats
 * (so "Could not open 'path': ..." does not name the file twice).
 */
const char *img_open_reason(const char *path, int rc, const char *reason);

/* "luna-img: Could not open 'path': reason" (reason as img_open_reason trims it). */
void img_open_error(const char *path, int rc, const char *reason);

/* qemu-img's -p progress: "    (NN.NN/100%)\r" on stdout whenever it moved by more than 1%, and at 0 and 100. */
struct img_progress {
    bool enabled;
    double current, last_print;
};
void img_progress_print(struct img_progress *progress, double percent);
/* A done/total progress callback (opaque: the struct img_progress). */
void img_progress_fraction(void *opaque, uint64_t done, uint64_t total);

/* "Try 'luna-img --help' for more information" on stderr; returns 1 (the exit code). */
int img_help_hint(void);

/*
 * For verbs that read one image (info, check): -f, if given, must be raw
 * or qcow2 and exactly one file name must follow the options.  0 with
 * *filename set, or 1 (the exit code) after the message.
 */
int img_one_image(const char *format, int argc, char **argv, int optind, const char **filename);

/* The formats luna-img reads: raw and qcow2, and (read-only) vmdk, vdi and vpc. */
bool img_input_format_known(const char *format);

/*
 * Open path as format (a name img_input_format_known accepts, or NULL to
 * probe the magic as qemu-img does), printing qemu-img's message when it
 * cannot.  0 or -errno.
 */
int img_open_image(const char *path, const char *format, bool readonly, bool force_share, enum bdev_cache_mode cache,
                   struct bdev **out);

/* -l snapshot_param: "snapshot.id=ID,snapshot.name=NAME" (either or both), or an id or name. */
struct img_snapshot_choice {
    const char *id, *name, *any;
    struct img_options storage; /* what id and name point into */
};
/* 0, or 1 (the exit code) after qemu-img's message. */
int img_snapshot_param_parse(const char *text, struct img_snapshot_choice *choice);
void img_snapshot_choice_free(struct img_snapshot_choice *choice);

/*
 * img_open_image, read-only, of the internal snapshot choice names (NULL:
 * the active image), with qemu-img's messages ("Failed to load snapshot:
 * Can't find snapshot", and for a raw image: "... does not support
 * temporarily loading internal snapshots").
 */
int img_open_snapshot(const char *path, const char *format, bool force_share, enum bdev_cache_mode cache,
                      const struct img_snapshot_choice *choice, struct bdev **out);

/* qemu-img's "Snapshot list:" table (info and snapshot -l print it). */
struct qcow2_snapshot;
void img_print_snapshots(const struct qcow2_snapshot *entries, uint32_t count);

/* The verbs: argc/argv start at the verb; return the process exit code. */
int img_check_main(int argc, char **argv);
int img_create_main(int argc, char **argv);
int img_info_main(int argc, char **argv);
int img_convert_main(int argc, char **argv);
int img_map_main(int argc, char **argv);
int img_compare_main(int argc, char **argv);
int img_measure_main(int argc, char **argv);
int img_commit_main(int argc, char **argv);
int img_rebase_main(int argc, char **argv);
int img_snapshot_main(int argc, char **argv);
int img_resize_main(int argc, char **argv);
int img_amend_main(int argc, char **argv);

/* create's "-o help" text for raw or qcow2 (convert -o help prints it too). */
void img_create_options_help(const char *format);

/*
 * Create filename (raw or qcow2, size bytes, rounded up to sectors) from
 * -o options as `create` does, for convert: no Formatting line, the
 * backing file is not opened, and messages carry qemu-img convert's
 * prefixes ("FILE: error while converting FMT: ...").  Returns the exit
 * code (0 or 1); options stays the caller's to free.
 */
int img_create_for_convert(const char *format, const char *filename, uint64_t size, const char *backing_file,
                           const char *backing_format, struct img_options *options);

#endif
