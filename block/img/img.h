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

/* The verbs: argc/argv start at the verb; return the process exit code. */
int img_create_main(int argc, char **argv);
int img_info_main(int argc, char **argv);

#endif
