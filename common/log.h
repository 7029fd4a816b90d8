/*
 * log: the one place diagnostics leave the process.
 *
 * Errors are logged once, at the edge that decides what to do about them
 * (a connection drops, a config is rejected), with enough context to act on;
 * lower layers return negative errno values and stay silent.  Thread-safe:
 * each message is formatted into one buffer and written with one write(2),
 * so lines from different worker threads never interleave.
 */
#ifndef LUNA_COMMON_LOG_H
#define LUNA_COMMON_LOG_H

#include <stdarg.h>

enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG,
};

/* Messages above this level are dropped.  Default: LOG_LEVEL_INFO. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* "error", "warn", "info", "debug" -> level; returns -EINVAL when unknown. */
int log_level_parse(const char *name, enum log_level *level);
const char *log_level_name(enum log_level level);

/* Prefix every line with a program name ("lunad"). */
void log_set_program(const char *name);

void log_message(enum log_level level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
void log_message_va(enum log_level level, const char *format, va_list args);

#define log_error(...) log_message(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_message(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_message(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                                                       \
    do {                                                                     \
        if (log_get_level() >= LOG_LEVEL_DEBUG)                              \
            log_message(LOG_LEVEL_DEBUG, __VA_ARGS__);                       \
    } while (0)

#endif
