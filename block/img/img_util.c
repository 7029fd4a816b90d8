/* img_util: qemu-img's size and option-list syntax, and error printing. */
#include "block/img/img.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error_message.h"

static int suffix_shift(char suffix)
{
    switch (toupper((unsigned char)suffix)) {
    case 'B': return 0;
    case 'K': return 10;
    case 'M': return 20;
    case 'G': return 30;
    case 'T': return 40;
    case 'P': return 50;
    case 'E': return 60;
    default: return -1;
    }
}

int img_parse_size(const char *text, uint64_t *out)
{
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '-' || !*p)
        return -EINVAL;
    char *end;
    errno = 0;
    uint64_t whole = strtoull(p, &end, 0);
    if (end == p)
        return -EINVAL;
    if (errno == ERANGE)
        return -ERANGE;
    bool hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
    double fraction = 0;
    if (*end == '.' && !hex) {
        /* QEMU takes "1.5G"; the fraction must be followed by a suffix other than B. */
        char *fraction_end;
        fraction = strtod(end, &fraction_end);
        if (fraction_end == end || !isdigit((unsigned char)end[1]))
            return -EINVAL;
        end = fraction_end;
    }
    int shift = 0;
    if (*end) {
        shift = suffix_shift(*end);
        if (shift < 0 || end[1])
            return -EINVAL;
        if (hex)
            return -EINVAL; /* QEMU: hex with a suffix is ambiguous (0x1b) */
    }
    if (fraction != 0 && shift == 0)
        return -EINVAL;
    if (shift && whole > (UINT64_MAX >> shift))
        return -ERANGE;
    uint64_t value = whole << shift;
    if (fraction != 0) {
        double extra = fraction * (double)(1ull << shift);
        if ((double)(UINT64_MAX - value) < extra)
            return -ERANGE;
        value += (uint64_t)extra;
    }
    *out = value;
    return 0;
}

int img_parse_bool(const char *text, bool *out)
{
    if (!strcmp(text, "on") || !strcmp(text, "yes") || !strcmp(text, "true")) {
        *out = true;
        return 0;
    }
    if (!strcmp(text, "off") || !strcmp(text, "no") || !strcmp(text, "false")) {
        *out = false;
        return 0;
    }
    return -EINVAL;
}

/* Copy the text up to stop (or the end), turning ",," into ","; advance *p past it. */
static char *take_until(const char **p, char stop)
{
    const char *s = *p;
    size_t length = strlen(s);
    char *out = malloc(length + 1), *o = out;
    if (!out)
        return NULL;
    while (*s) {
        if (*s == ',') {
            if (s[1] == ',') {
                *o++ = ',';
                s += 2;
                continue;
            }
            break;
        }
        if (*s == stop)
            break;
        *o++ = *s++;
    }
    *o = '\0';
    *p = s;
    return out;
}

int img_options_parse(struct img_options *list, const char *text, char **error_message)
{
    const char *p = text;
    while (*p) {
        char *key = take_until(&p, '=');
        if (!key)
            return error_message_set(error_message, -ENOMEM, "out of memory");
        char *value = NULL;
        if (*p == '=') {
            p++;
            value = take_until(&p, '\0');
            if (!value) {
                free(key);
                return error_message_set(error_message, -ENOMEM, "out of memory");
            }
        }
        if (*p == ',')
            p++;
        if (!value && (!strcmp(key, "help") || !strcmp(key, "?"))) {
            list->help = true;
            free(key);
            continue;
        }
        if (!value || !*key) {
            int rc = error_message_set(error_message, -EINVAL, "Invalid option list: expected key=value, got '%s'",
                                       key);
            free(key);
            free(value);
            return rc;
        }
        struct img_option *grown = realloc(list->items, (list->count + 1) * sizeof(*grown));
        if (!grown) {
            free(key);
            free(value);
            return error_message_set(error_message, -ENOMEM, "out of memory");
        }
        list->items = grown;
        list->items[list->count++] = (struct img_option){.key = key, .value = value};
    }
    return 0;
}

const char *img_options_take(struct img_options *list, const char *key)
{
    const char *value = NULL;
    for (size_t i = 0; i < list->count; i++)
        if (!strcmp(list->items[i].key, key)) {
            list->items[i].used = true;
            value = list->items[i].value;
        }
    return value;
}

const char *img_options_unused(const struct img_options *list)
{
    for (size_t i = 0; i < list->count; i++)
        if (!list->items[i].used)
            return list->items[i].key;
    return NULL;
}

void img_options_free(struct img_options *list)
{
    for (size_t i = 0; i < list->count; i++) {
        free(list->items[i].key);
        free(list->items[i].value);
    }
    free(list->items);
    *list = (struct img_options){0};
}

void img_error(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "%s: ", IMG_PROGRAM);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
}

int img_help_hint(void)
{
    fprintf(stderr, "Try '%s --help' for more information\n", IMG_PROGRAM);
    return 1;
}

const char *img_open_reason(const char *path, int rc, const char *reason)
{
    const char *why = reason ? reason : strerror(-rc);
    size_t path_length = strlen(path);
    if (!strncmp(why, path, path_length) && !strncmp(why + path_length, ": ", 2))
        why += path_length + 2;
    return why;
}

void img_open_error(const char *path, int rc, const char *reason)
{
    img_error("Could not open '%s': %s", path, img_open_reason(path, rc, reason));
}

void img_progress_print(struct img_progress *progress, double percent)
{
    if (!progress->enabled)
        return;
    if (percent > 100)
        percent = 100;
    progress->current = percent;
    if (percent > progress->last_print + 1.0 || percent < progress->last_print - 1.0 || percent == 0 ||
        percent == 100) {
        progress->last_print = percent;
        printf("    (%3.2f/100%%)\r", percent);
        fflush(stdout);
    }
}

void img_progress_fraction(void *opaque, uint64_t done, uint64_t total)
{
    img_progress_print(opaque, total ? (double)done * 100.0 / (double)total : 100.0);
}

int img_option_error(int c, char **argv, int optind)
{
    if (c == ':')
        img_error("missing argument for option '%s'", argv[optind - 1]);
    else
        img_error("unrecognized option '%s'", argv[optind - 1]);
    return img_help_hint();
}

int img_parse_output(const char *text, bool *json)
{
    if (strcmp(text, "json") && strcmp(text, "human")) {
        img_error("--output must be used with human or json as argument.");
        return 1;
    }
    *json = !strcmp(text, "json");
    return 0;
}

int img_options_add(struct img_options *list, const char *text)
{
    char *message = NULL;
    if (img_options_parse(list, text, &message) == 0)
        return 0;
    img_error("%s", message ? message : "Invalid option list");
    free(message);
    return 1;
}
