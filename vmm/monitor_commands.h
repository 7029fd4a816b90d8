/*
 * monitor_commands: the human monitor's commands, as QEMU's HMP words them
 * (info status, info block, info cpus, stop, cont, system_powerdown, system_reset, quit,
 * help).
 *
 * Pure dispatch over a monitor_target the machine fills in, so the
 * wording and parsing are unit-tested without a VM.
 */
#ifndef LUNA_VMM_MONITOR_COMMANDS_H
#define LUNA_VMM_MONITOR_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>

struct monitor_drive_info {
    const char *id;
    const char *file;
    const char *format;
    const char *cache;
    bool read_only;
};

struct monitor_target {
    bool (*running)(void *opaque);
    void (*stop)(void *opaque); /* returns once every vCPU is parked */
    void (*cont)(void *opaque);
    void (*quit)(void *opaque);
    void (*powerdown)(void *opaque); /* press the ACPI power button */
    void (*reset)(void *opaque);     /* reset the machine: the guest boots again */
    unsigned cpu_count;
    int (*cpu_thread_id)(void *opaque, unsigned index);
    unsigned drive_count;
    void (*drive)(void *opaque, unsigned index, struct monitor_drive_info *info);
    void *opaque;
};

enum monitor_result { MONITOR_CONTINUE, MONITOR_CLOSE };

/* Run one command line, appending the reply (newline-terminated lines) to out. */
enum monitor_result monitor_execute(const struct monitor_target *target, const char *line, char *out, size_t size);

#endif
