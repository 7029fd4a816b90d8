#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int current_level = LOG_LEVEL_INFO;
static const char *program_name = "luna";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level) { current_level = level; }

enum log_level log_get_level(void) { return (enum log_level)current_level; }

void log_set_program(const char *name) { program_name = name; }

int log_level_parse(const char *name, enum log_level *level)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *level = (enum log_level)i;
            return 0;
        }
    }
    if (strcmp(name, "warning") == 0) {
        *level = LOG_LEVEL_WARN;
        return 0;
    }
    return -EINVAL;
}

const char *log_level_name(enum log_level level)
{
    if ((unsigned)level < sizeof(level_names) / sizeof(level_names[0]))
        return level_names[level];
    return "?";
}

void log_message_va(enum log_level level, const char *format, va_list args)
{
    if ((int)level > current_level)
        return;
    char line[2048];
    int saved_errno = errno;
    int n = snprintf(line, sizeof(line), "%s: %s: ", program_name, log_level_name(level));
    if (n < 0)
        n = 0;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, format, args);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write per line keeps concurrent threads' lines whole. */
    ssize_t ignored = write(STDERR_FILENO, line, len);
    (void)ignored;
    errno = saved_errno;
}

void log_message(enum log_level level, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    log_message_va(level, format, args);
    va_end(args);
}
