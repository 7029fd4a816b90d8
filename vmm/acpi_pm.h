/*
 * acpi_pm: the PM1a event and control blocks the FADT points to.
 *
 * Status reads as zero (no fixed event ever fires), enable as written; writing
 * SLP_EN with the DSDT's _S5 sleep type to the control block is how an
 * ACPI guest powers off (`poweroff`), and lunavm ends the VM on it.  The
 * control block reads with SCI_EN set: the machine is always in ACPI mode.
 */
#ifndef LUNA_VMM_ACPI_PM_H
#define LUNA_VMM_ACPI_PM_H

#include <stdint.h>

struct io_bus;

struct acpi_pm {
    void (*power_off)(void *opaque); /* on a vCPU thread */
    void *opaque;
    /* PM1 enable: kept as written, since ACPICA reads back what it enables. */
    _Atomic uint16_t enable;
};

int acpi_pm_register(struct acpi_pm *pm, struct io_bus *ports);

#endif
