/*
 * acpi_pm: the PM1a event and control blocks the FADT points to.
 *
 * The event block holds PM1 status (write-one-to-clear) and enable.  The
 * only fixed event lunavm raises is the power button (monitor
 * `system_powerdown`, as QEMU's): it sets PWRBTN_STS, and while a status bit
 * is set with its enable bit the SCI line is held asserted, level-triggered
 * as ACPI requires, until the guest clears the status.  Writing SLP_EN with
 * the DSDT's _S5 sleep type to the control block is how an ACPI guest
 * powers off (`poweroff`), and lunavm ends the VM on it.  The control block
 * reads with SCI_EN set: the machine is always in ACPI mode.
 */
#ifndef LUNA_VMM_ACPI_PM_H
#define LUNA_VMM_ACPI_PM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define ACPI_PM1_PWRBTN 0x0100u /* PWRBTN_STS and PWRBTN_EN: bit 8 of status and of enable */

struct io_bus;

struct acpi_pm {
    void (*power_off)(void *opaque); /* on a vCPU thread */
    void (*set_sci)(void *opaque, bool level); /* the SCI line; NULL: none wired */
    void *opaque;
    /* Status and enable change on vCPU threads (guest writes) and the I/O
     * thread (the monitor's power button); the SCI level follows both. */
    pthread_mutex_t lock;
    uint16_t status;
    uint16_t enable; /* kept as written, since ACPICA reads back what it enables */
};

/* Set up the lock (before any other call).  0 or -errno. */
int acpi_pm_init(struct acpi_pm *pm);
void acpi_pm_destroy(struct acpi_pm *pm);

int acpi_pm_register(struct acpi_pm *pm, struct io_bus *ports);

/* Press the power button: PWRBTN_STS, and the SCI if the guest enabled it. */
void acpi_pm_press_power_button(struct acpi_pm *pm);

/* The I/O accessors, exposed for the unit tests (offsets within each block). */
void acpi_pm_event_read(void *opaque, uint64_t offset, uint8_t *data, unsigned length);
void acpi_pm_event_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned length);

#endif
