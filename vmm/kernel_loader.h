/*
 * kernel_loader: puts a kernel (a bzImage, or an uncompressed vmlinux ELF,
 * which skips the self-decompression), its initrd and its command line
 * into guest memory and prepares the zero page, the ACPI and MP tables and
 * the boot page tables, so the boot vCPU only needs its registers set to
 * start Linux.
 */
#ifndef LUNA_VMM_KERNEL_LOADER_H
#define LUNA_VMM_KERNEL_LOADER_H

#include <stdint.h>

#include "vmm/acpi_tables.h"
#include "vmm/guest_memory.h"

struct kernel_boot {
    const char *kernel_path;
    const char *initrd_path; /* NULL: none */
    const char *cmdline;     /* complete, devices included */
    unsigned cpus;
    const struct acpi_layout *acpi; /* the devices the DSDT declares */
};

/* Load everything; *entry receives the 64-bit entry point.  0 or -errno with a message. */
int kernel_load(const struct kernel_boot *boot, const struct guest_memory *memory, uint64_t *entry,
                char **error_message);

#endif
