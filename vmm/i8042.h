/*
 * i8042: just enough of the PC keyboard controller for a guest without a
 * keyboard.
 *
 * The status register reads "nothing to read, ready for a command" at
 * once, so Linux's probe and reset paths never spin on it; the pulse-reset
 * command (0xfe written to port 0x64) is how Linux reboots a PC without
 * ACPI, and lunavm ends the VM on it, as Firecracker does.
 */
#ifndef LUNA_VMM_I8042_H
#define LUNA_VMM_I8042_H

#include <stdint.h>

#define I8042_DATA_PORT 0x60u
#define I8042_COMMAND_PORT 0x64u
#define I8042_RESET_COMMAND 0xfeu

struct io_bus;

struct i8042 {
    void (*reset)(void *opaque); /* called on a vCPU thread */
    void *opaque;
};

/* Claim ports 0x60 and 0x64.  0 or -errno. */
int i8042_register(struct i8042 *controller, struct io_bus *ports);

#endif
