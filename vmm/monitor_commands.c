#include "vmm/monitor_commands.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void append(char *out, size_t size, const char *format, ...) __attribute__((format(printf, 3, 4)));

static void append(char *out, size_t size, const char *format, ...)
{
    size_t used = strnlen(out, size);
    if (used + 1 >= size)
        return;
    va_list args;
    va_start(args, format);
    vsnprintf(out + used, size - used, format, args); /* truncation only shortens a reply */
    va_end(args);
}

static void info_block(const struct monitor_target *target, char *out, size_t size)
{
    for (unsigned i = 0; i < target->drive_count; i++) {
        struct monitor_drive_info drive;
        target->drive(target->opaque, i, &drive);
        append(out, size, "%s: %s (%s%s)\n    Cache mode:       %s\n", drive.id, drive.file, drive.format,
               drive.read_only ? ", read-only" : "", drive.cache);
    }
}

static void info_cpus(const struct monitor_target *target, char *out, size_t size)
{
    for (unsigned i = 0; i < target->cpu_count; i++)
        append(out, size, "%sCPU #%u: thread_id=%d\n", i == 0 ? "* " : "  ", i,
               target->cpu_thread_id(target->opaque, i));
}

static const char help_text[] = "cont|c -- resume emulation\n"
                                "help|? -- show this help\n"
                                "info status -- show the current VM status (running|paused)\n"
                                "info block -- show the block devices\n"
                                "info cpus -- show infos for each CPU\n"
                                "quit|q -- quit the emulator\n"
                                "stop|s -- stop emulation\n"
                                "system_powerdown -- send system power down event\n"
                                "system_reset -- reset the system\n";

enum monitor_result monitor_execute(const struct monitor_target *target, const char *line, char *out, size_t size)
{
    char words[2][32] = {{0}};
    int count = sscanf(line, "%31s %31s", words[0], words[1]);
    const char *command = words[0];
    if (count <= 0)
        return MONITOR_CONTINUE;
    if (!strcmp(command, "info")) {
        const char *what = count > 1 ? words[1] : "";
        if (!strcmp(what, "status"))
            append(out, size, "VM status: %s\n", target->running(target->opaque) ? "running" : "paused");
        else if (!strcmp(what, "block"))
            info_block(target, out, size);
        else if (!strcmp(what, "cpus"))
            info_cpus(target, out, size);
        else
            append(out, size, "info: unknown or missing item '%s' (status, block, cpus)\n", what);
    } else if (!strcmp(command, "stop") || !strcmp(command, "s")) {
        target->stop(target->opaque);
    } else if (!strcmp(command, "cont") || !strcmp(command, "c")) {
        target->cont(target->opaque);
    } else if (!strcmp(command, "system_powerdown")) {
        target->powerdown(target->opaque);
    } else if (!strcmp(command, "system_reset")) {
        target->reset(target->opaque);
    } else if (!strcmp(command, "quit") || !strcmp(command, "q")) {
        target->quit(target->opaque);
        return MONITOR_CLOSE;
    } else if (!strcmp(command, "help") || !strcmp(command, "?")) {
        append(out, size, "%s", help_text);
    } else {
        append(out, size, "unknown command: '%s'\n", command);
    }
    return MONITOR_CONTINUE;
}
