/*
 * machine: one lunavm virtual machine from start to end.
 *
 * Assembles what the other modules provide, in order: guest RAM, the KVM
 * VM, the disks (opened through block/), the kernel and its boot
 * structures, the legacy devices (UART, i8042, RTC) and the virtio-mmio
 * disks on the buses, the I/O thread and one thread per vCPU.  The main
 * thread then waits for a reason to stop (guest reboot or power-off, a
 * signal, Ctrl-A x, an error), stops the vCPUs, lets disk requests in
 * flight finish, flushes, and tears everything down.
 */
#ifndef LUNA_VMM_MACHINE_H
#define LUNA_VMM_MACHINE_H

#include "vmm/vm_options.h"

/*
 * Run the VM; returns the process exit status (errors are logged here).
 * ready (may be NULL) is called once, on the main thread, when the vCPU
 * and I/O threads run: where -daemonize lets its parent go.
 */
int machine_run(const struct vm_options *options, void (*ready)(void *opaque), void *ready_opaque);

/*
 * The kernel command line: the user's -append, console=ttyS0 unless a
 * console is named, and one virtio_mmio.device= per virtio device (the
 * disks, then the virtio-rng), in window order.  Malloc'd; NULL
 * on allocation failure.
 */
char *machine_build_cmdline(const char *append, unsigned device_count);

/* The interrupt line of the index-th virtio-mmio device (IRQ 8 stays the RTC's, 9 the SCI's). */
unsigned machine_virtio_irq(unsigned index);

#endif
