#include "vmm/console.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

int console_setup(struct console *console, struct serial_8250 *uart)
{
    console->uart = uart;
    if (!isatty(STDIN_FILENO))
        return 0;
    if (tcgetattr(STDIN_FILENO, &console->saved_terminal) < 0)
        return -errno;
    struct termios raw = console->saved_terminal;
    /* Like cfmakeraw, but keep output post-processing: the guest's "\n" is the terminal's too. */
    raw.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    raw.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    raw.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    raw.c_cflag |= CS8;
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) < 0)
        return -errno;
    console->terminal_saved = true;
    return 0;
}

void console_restore(struct console *console)
{
    if (console->terminal_saved)
        tcsetattr(STDIN_FILENO, TCSANOW, &console->saved_terminal);
    console->terminal_saved = false;
}

void console_transmit(void *opaque, uint8_t byte)
{
    (void)opaque;
    for (;;) {
        ssize_t written = write(STDOUT_FILENO, &byte, 1);
        /* A closed or broken stdout drops console output: the guest must not stall on it. */
        if (written == 1 || (written < 0 && errno != EINTR && errno != EAGAIN))
            return;
    }
}

void console_receive_ready(void *opaque)
{
    struct console *console = opaque;
    if (console->loop)
        ev_async_send(console->loop, &console->room_watcher);
}

size_t console_filter_input(struct console *console, const uint8_t *input, size_t length, uint8_t *out, bool *quit)
{
    size_t produced = 0;
    *quit = false;
    for (size_t i = 0; i < length; i++) {
        uint8_t byte = input[i];
        if (console->escape_pending) {
            console->escape_pending = false;
            if (byte == 'x' || byte == 'X') {
                *quit = true;
                return produced;
            }
            if ((byte == 'c' || byte == 'C') && console->monitor_target) {
                console_monitor_toggle(console);
                continue;
            }
            if (console->monitor_focus) {
                /* The monitor takes text only: an unknown escape is dropped there. */
                if (byte == CONSOLE_ESCAPE)
                    continue;
                console_monitor_feed(console, byte);
                continue;
            }
            if (byte != CONSOLE_ESCAPE) /* an unknown escape passes both bytes through */
                out[produced++] = CONSOLE_ESCAPE;
            out[produced++] = byte;
        } else if (byte == CONSOLE_ESCAPE) {
            console->escape_pending = true;
        } else if (console->monitor_focus) {
            console_monitor_feed(console, byte);
        } else {
            out[produced++] = byte;
        }
    }
    return produced;
}

/* Hand pending input to the UART; true when all of it was taken. */
static bool deliver(struct console *console)
{
    size_t taken = serial_8250_receive(console->uart, console->pending + console->pending_start,
                                       console->pending_length);
    console->pending_start += taken;
    console->pending_length -= taken;
    return console->pending_length == 0;
}

static void input_ready(struct ev_loop *loop, ev_io *watcher, int events)
{
    (void)events;
    struct console *console = watcher->data;
    uint8_t buffer[sizeof(console->pending) / 2];
    ssize_t got = read(STDIN_FILENO, buffer, sizeof(buffer));
    if (got < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (got <= 0) { /* end of input (or an error): the guest keeps running without it */
        console->input_closed = true;
        ev_io_stop(loop, watcher);
        return;
    }
    bool quit;
    console->pending_start = 0;
    console->pending_length = console_filter_input(console, buffer, (size_t)got, console->pending, &quit);
    if (quit && console->quit) {
        console->quit(console->opaque);
        return;
    }
    /* A full FIFO: stop reading until the guest makes room (the terminal buffers meanwhile). */
    if (!deliver(console))
        ev_io_stop(loop, watcher);
}

static void room_available(struct ev_loop *loop, ev_async *watcher, int events)
{
    (void)events;
    struct console *console = watcher->data;
    if (deliver(console) && !console->input_closed)
        ev_io_start(loop, &console->input_watcher);
}

void console_attach(struct console *console, struct ev_loop *loop)
{
    console->loop = loop;
    ev_async_init(&console->room_watcher, room_available);
    console->room_watcher.data = console;
    ev_async_start(loop, &console->room_watcher);
    ev_io_init(&console->input_watcher, input_ready, STDIN_FILENO, EV_READ);
    console->input_watcher.data = console;
    ev_io_start(loop, &console->input_watcher);
    /* The async watcher alone must not keep the loop running. */
    ev_unref(loop);
}

void console_detach(struct console *console)
{
    if (!console->loop)
        return;
    ev_ref(console->loop);
    ev_async_stop(console->loop, &console->room_watcher);
    ev_io_stop(console->loop, &console->input_watcher);
}
