#include "common/error_message.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int error_message_set(char **message, int code, const char *format, ...)
{
    if (!message)
        return code;
    va_list args;
    va_start(args, format);
    char *text = NULL;
    int n = vasprintf(&text, format, args);
    va_end(args);
    free(*message);
    *message = n < 0 ? NULL : text;
    return code;
}
