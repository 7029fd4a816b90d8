/*
 * The human monitor multiplexed on the console, as QEMU's -nographic: Ctrl-A c
 * gives the keyboard to the monitor (greeting the first time, then QEMU's
 * "(qemu) " prompt) and back.  The terminal is raw, so the monitor echoes
 * what is typed and handles backspace itself, as QEMU's readline does.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "vmm/console.h"

#define GREETING "QEMU-compatible lunavm monitor - type 'help' for more information\n"
#define PROMPT "(qemu) "
#define REPLY_SIZE 8192
#define BACKSPACE 0x08
#define DELETE 0x7f

static void output(struct console *console, const char *text, size_t length)
{
    if (console->monitor_output) {
        console->monitor_output(console->monitor_output_opaque, text, length);
        return;
    }
    while (length > 0) {
        ssize_t written = write(STDOUT_FILENO, text, length);
        if (written < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (written <= 0) /* a broken stdout loses the reply, as it loses the guest's output */
            return;
        text += written;
        length -= (size_t)written;
    }
}

static void output_string(struct console *console, const char *text)
{
    output(console, text, strlen(text));
}

void console_monitor_toggle(struct console *console)
{
    console->monitor_focus = !console->monitor_focus;
    if (!console->monitor_focus) {
        output_string(console, "\n");
        return;
    }
    output_string(console, console->monitor_greeted ? "\n" PROMPT : "\n" GREETING PROMPT);
    console->monitor_greeted = true;
}

static void run_line(struct console *console)
{
    static char reply[REPLY_SIZE]; /* only the I/O thread runs commands */
    console->monitor_line[console->monitor_line_length] = '\0';
    reply[0] = '\0';
    monitor_execute(console->monitor_target, console->monitor_line, reply, sizeof(reply));
    console->monitor_line_length = 0;
    output_string(console, "\n");
    output_string(console, reply);
    output_string(console, PROMPT);
}

void console_monitor_feed(struct console *console, uint8_t byte)
{
    if (byte == '\r' || byte == '\n') {
        if (console->monitor_discarding) {
            console->monitor_discarding = false;
            console->monitor_line_length = 0;
            output_string(console, "\nline too long, ignored\n" PROMPT);
            return;
        }
        run_line(console);
        return;
    }
    if (byte == BACKSPACE || byte == DELETE) {
        if (console->monitor_line_length > 0 && !console->monitor_discarding) {
            console->monitor_line_length--;
            output_string(console, "\b \b");
        }
        return;
    }
    if (byte < 0x20) /* other control characters: no line editing beyond backspace */
        return;
    if (console->monitor_line_length + 1 >= sizeof(console->monitor_line))
        console->monitor_discarding = true;
    if (console->monitor_discarding)
        return;
    console->monitor_line[console->monitor_line_length++] = (char)byte;
    output(console, (const char *)&byte, 1);
}
