/*
 * error_message: the malloc'd, human-readable reason that open and parse
 * functions hand back beside their negative errno.
 *
 * Modules below the edge never log; they describe what went wrong here
 * (naming the file, line or address) and the edge logs it once.
 */
#ifndef LUNA_COMMON_ERROR_MESSAGE_H
#define LUNA_COMMON_ERROR_MESSAGE_H

/*
 * Replace *message (freeing the old text) with a formatted one and return
 * code, so callers can write `return error_message_set(message, -EINVAL, ...)`.
 * message may be NULL (the caller wants no text); otherwise *message must
 * be NULL or a text from an earlier call.  On allocation failure
 * *message becomes NULL: the errno still says what happened.
 */
int error_message_set(char **message, int code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

#endif
