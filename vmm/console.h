/*
 * console: the guest's serial console on lunavm's standard input and
 * output, as QEMU's -nographic -serial stdio.
 *
 * When standard input is a terminal it is put in raw mode (restored by
 * console_restore, which is also safe to call from an exit path), so
 * keystrokes reach the guest as typed; Ctrl-A x ends the VM and Ctrl-A
 * Ctrl-A sends a Ctrl-A, as in QEMU.  With monitor_target set (no -monitor,
 * or -monitor stdio: QEMU's -nographic mux), Ctrl-A c switches the input
 * between the guest and the human monitor (console_monitor.c); the guest's
 * output keeps flowing meanwhile.  Input is read on the I/O thread's
 * loop and fed to the UART as its FIFO has room; output is written from
 * the vCPU thread that wrote the transmit register.
 */
#ifndef LUNA_VMM_CONSOLE_H
#define LUNA_VMM_CONSOLE_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <termios.h>

#include "vmm/monitor_commands.h"
#include "vmm/serial_8250.h"

#define CONSOLE_ESCAPE 0x01 /* Ctrl-A */
#define CONSOLE_MONITOR_LINE_MAX 256

struct console {
    struct serial_8250 *uart;
    struct ev_loop *loop;
    ev_io input_watcher;
    ev_async room_watcher; /* the UART drained its FIFO: deliver what waits */
    bool terminal_saved;
    struct termios saved_terminal;
    bool escape_pending;
    bool input_closed;
    uint8_t pending[256];  /* read from stdin, not yet accepted by the UART */
    size_t pending_start, pending_length;
    void (*quit)(void *opaque); /* Ctrl-A x */
    void *opaque;
    /* The monitor on the console; NULL: Ctrl-A c passes to the guest like any unknown escape. */
    const struct monitor_target *monitor_target;
    bool monitor_focus; /* input goes to the monitor, not the guest */
    bool monitor_greeted;
    bool monitor_discarding; /* the line is too long: drop it up to its end */
    char monitor_line[CONSOLE_MONITOR_LINE_MAX];
    size_t monitor_line_length;
    /* Where the monitor writes; NULL: standard output (the unit tests capture it). */
    void (*monitor_output)(void *opaque, const char *text, size_t length);
    void *monitor_output_opaque;
};

/* Raw mode if stdin is a terminal.  0 or -errno. */
int console_setup(struct console *console, struct serial_8250 *uart);
void console_restore(struct console *console);

/* On the I/O thread: start reading standard input into the UART. */
void console_attach(struct console *console, struct ev_loop *loop);
void console_detach(struct console *console);

/* UART callbacks: transmit to stdout; receive_ready wakes the I/O thread. */
void console_transmit(void *opaque, uint8_t byte);
void console_receive_ready(void *opaque);

/*
 * Apply the escape rules to input, writing what the guest should get into
 * out (at least length bytes).  Returns its length; *quit when Ctrl-A x
 * was seen (what follows it is dropped).  Input while the monitor has the
 * focus goes to it (and its commands run) instead of out.
 */
size_t console_filter_input(struct console *console, const uint8_t *input, size_t length, uint8_t *out, bool *quit);

/* console_monitor.c: Ctrl-A c, and one byte typed at the monitor (echoed; a line runs on CR or LF). */
void console_monitor_toggle(struct console *console);
void console_monitor_feed(struct console *console, uint8_t byte);

#endif
