#include "vmm/vm_options.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error_message.h"
#include "vmm/monitor.h"

int vm_parse_memory_size(const char *text, uint64_t *bytes)
{
    const char *value = strncmp(text, "size=", 5) == 0 ? text + 5 : text;
    char *end;
    errno = 0;
    unsigned long long number = strtoull(value, &end, 10);
    if (errno || end == value || value[0] == '-')
        return -EINVAL;
    unsigned shift = 20; /* QEMU: a bare number is MiB */
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: return -EINVAL;
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || number > (UINT64_MAX >> shift))
        return -EINVAL;
    *bytes = (uint64_t)number << shift;
    return 0;
}

static int parse_on_off(const char *value, bool *out)
{
    if (!strcmp(value, "on") || !strcmp(value, "true") || !strcmp(value, "yes")) {
        *out = true;
        return 0;
    }
    if (!strcmp(value, "off") || !strcmp(value, "false") || !strcmp(value, "no")) {
        *out = false;
        return 0;
    }
    return -EINVAL;
}

/* Next "key=value" of a QEMU option string into a malloc'd copy with ",," unescaped; NULL at the end. */
static char *next_item(const char **cursor)
{
    const char *p = *cursor;
    if (!*p)
        return NULL;
    char *item = malloc(strlen(p) + 1);
    if (!item)
        return NULL;
    size_t length = 0;
    while (*p) {
        if (p[0] == ',' && p[1] == ',') {
            item[length++] = ',';
            p += 2;
        } else if (*p == ',') {
            p++;
            break;
        } else {
            item[length++] = *p++;
        }
    }
    item[length] = '\0';
    *cursor = p;
    return item;
}

static int replace_string(char **slot, const char *value)
{
    char *copy = strdup(value);
    if (!copy)
        return -ENOMEM;
    free(*slot);
    *slot = copy;
    return 0;
}

static int apply_drive_key(struct vm_drive *drive, const char *key, const char *value, char **error_message)
{
    if (!strcmp(key, "file"))
        return replace_string(&drive->file, value);
    if (!strcmp(key, "id"))
        return replace_string(&drive->id, value);
    if (!strcmp(key, "serial")) {
        if (strlen(value) > 20)
            return error_message_set(error_message, -EINVAL, "-drive serial=%s: at most 20 characters", value);
        return replace_string(&drive->serial, value);
    }
    if (!strcmp(key, "if")) {
        if (strcmp(value, "virtio") != 0)
            return error_message_set(error_message, -EINVAL, "-drive if=%s: only if=virtio is supported", value);
        return 0;
    }
    if (!strcmp(key, "media")) {
        if (strcmp(value, "disk") != 0)
            return error_message_set(error_message, -EINVAL, "-drive media=%s: only media=disk is supported", value);
        return 0;
    }
    if (!strcmp(key, "format")) {
        if (bdev_format_parse(value, &drive->format) < 0)
            return error_message_set(error_message, -EINVAL, "-drive format=%s: unknown format", value);
        return 0;
    }
    if (!strcmp(key, "cache")) {
        if (bdev_cache_mode_parse(value, &drive->cache) < 0)
            return error_message_set(error_message, -EINVAL, "-drive cache=%s: unknown cache mode", value);
        return 0;
    }
    if (!strcmp(key, "aio")) {
        if (bdev_aio_engine_parse(value, &drive->aio) < 0)
            return error_message_set(error_message, -EINVAL, "-drive aio=%s: unknown engine", value);
        return 0;
    }
    if (!strcmp(key, "readonly")) {
        if (parse_on_off(value, &drive->readonly) < 0)
            return error_message_set(error_message, -EINVAL, "-drive readonly=%s: on or off expected", value);
        return 0;
    }
    if (!strcmp(key, "snapshot")) {
        if (parse_on_off(value, &drive->snapshot) < 0)
            return error_message_set(error_message, -EINVAL, "-drive snapshot=%s: on or off expected", value);
        return 0;
    }
    if (!strcmp(key, "discard")) {
        if (!strcmp(value, "unmap") || !strcmp(value, "on"))
            drive->discard = true;
        else if (!strcmp(value, "ignore") || !strcmp(value, "off"))
            drive->discard = false;
        else
            return error_message_set(error_message, -EINVAL, "-drive discard=%s: unmap or ignore expected", value);
        return 0;
    }
    /* lunad's --export key, and QEMU's NBD option (without QEMU's default of 0: failing at once). */
    if (!strcmp(key, "reconnect-timeout") || !strcmp(key, "file.reconnect-delay")) {
        char *end;
        errno = 0;
        unsigned long seconds = strtoul(value, &end, 10);
        if (errno || end == value || *end || *value == '-' || seconds < 1 || seconds > 86400)
            return error_message_set(error_message, -EINVAL, "-drive %s=%s: 1 to 86400 seconds expected", key, value);
        drive->reconnect_timeout = (unsigned)seconds;
        return 0;
    }
    return error_message_set(error_message, -EINVAL, "-drive: option '%s' is not supported", key);
}

int vm_parse_drive(const char *text, struct vm_drive *drive, char **error_message)
{
    *drive = (struct vm_drive){.format = BDEV_FORMAT_AUTO, .cache = BDEV_CACHE_WRITEBACK, .discard = true};
    const char *cursor = text;
    int ret = 0;
    for (char *item; ret == 0 && (item = next_item(&cursor));) {
        char *equals = strchr(item, '=');
        if (!equals)
            ret = error_message_set(error_message, -EINVAL, "-drive: '%s' is not key=value", item);
        else {
            *equals = '\0';
            ret = apply_drive_key(drive, item, equals + 1, error_message);
        }
        free(item);
    }
    if (ret == 0 && (!drive->file || !*drive->file))
        ret = error_message_set(error_message, -EINVAL, "-drive %s: no file=", text);
    return ret;
}

static void free_drive(struct vm_drive *drive)
{
    free(drive->file);
    free(drive->id);
    free(drive->serial);
    memset(drive, 0, sizeof(*drive));
}

void vm_options_clear(struct vm_options *options)
{
    free(options->kernel);
    free(options->initrd);
    free(options->append);
    free(options->name);
    free(options->monitor);
    free(options->pidfile);
    for (unsigned i = 0; i < options->drive_count; i++)
        free_drive(&options->drives[i]);
    memset(options, 0, sizeof(*options));
}

static int parse_cpus(const char *text, unsigned *cpus)
{
    const char *value = strncmp(text, "cpus=", 5) == 0 ? text + 5 : text;
    char *end;
    errno = 0;
    unsigned long number = strtoul(value, &end, 10);
    if (errno || end == value || *end || number == 0 || number > VM_MAX_CPUS)
        return -EINVAL;
    *cpus = (unsigned)number;
    return 0;
}

/* Options with an argument that only have one acceptable value. */
static int check_fixed_value(const char *option, const char *value, const char *accepted, char **error_message)
{
    if (strcmp(value, accepted) != 0)
        return error_message_set(error_message, -EINVAL, "%s %s: only '%s' is supported", option, value, accepted);
    return 0;
}

static int parse_one(struct vm_options *options, const char *option, const char *value, char **error_message)
{
    if (!strcmp(option, "-m")) {
        if (vm_parse_memory_size(value, &options->memory_size) < 0)
            return error_message_set(error_message, -EINVAL, "-m %s: not a memory size", value);
        if (options->memory_size < VM_MIN_MEMORY || options->memory_size > VM_MAX_MEMORY)
            return error_message_set(error_message, -EINVAL, "-m %s: between 32M and 1T expected", value);
        return 0;
    }
    if (!strcmp(option, "-smp")) {
        if (parse_cpus(value, &options->cpus) < 0)
            return error_message_set(error_message, -EINVAL, "-smp %s: a CPU count from 1 to %u expected", value,
                                     VM_MAX_CPUS);
        return 0;
    }
    if (!strcmp(option, "-kernel"))
        return replace_string(&options->kernel, value);
    if (!strcmp(option, "-initrd"))
        return replace_string(&options->initrd, value);
    if (!strcmp(option, "-append"))
        return replace_string(&options->append, value);
    if (!strcmp(option, "-name"))
        return replace_string(&options->name, strncmp(value, "guest=", 6) == 0 ? value + 6 : value);
    if (!strcmp(option, "-device")) {
        /* virtio-mmio is all lunavm has: QEMU's name for that entropy device; -device virtio-rng-pci is an error. */
        if (strcmp(value, "virtio-rng-device") != 0)
            return error_message_set(error_message, -EINVAL, "-device %s: only virtio-rng-device is supported", value);
        options->rng = true;
        return 0;
    }
    if (!strcmp(option, "-pidfile"))
        return replace_string(&options->pidfile, value);
    if (!strcmp(option, "-monitor")) {
        options->console_on_stdio = options->console_on_stdio || !strcmp(value, "stdio");
        int ret = monitor_check_spec(value, error_message);
        return ret < 0 ? ret : replace_string(&options->monitor, value);
    }
    if (!strcmp(option, "-serial"))
        options->console_on_stdio = true;
    if (!strcmp(option, "-serial")) /* mon:stdio: the console with the monitor on Ctrl-A c, lunavm's default */
        return check_fixed_value(option, !strcmp(value, "mon:stdio") ? "stdio" : value, "stdio", error_message);
    if (!strcmp(option, "-accel"))
        return check_fixed_value(option, value, "kvm", error_message);
    if (!strcmp(option, "-cpu"))
        return check_fixed_value(option, value, "host", error_message);
    if (!strcmp(option, "-drive")) {
        if (options->drive_count == VM_MAX_DRIVES)
            return error_message_set(error_message, -EINVAL, "-drive: at most %u drives", VM_MAX_DRIVES);
        int ret = vm_parse_drive(value, &options->drives[options->drive_count], error_message);
        if (ret < 0) {
            free_drive(&options->drives[options->drive_count]);
            return ret;
        }
        options->drive_count++;
        return 0;
    }
    return error_message_set(error_message, -EINVAL, "%s: unknown option", option);
}

int vm_options_parse(int argc, char **argv, struct vm_options *options, char **error_message)
{
    memset(options, 0, sizeof(*options));
    options->memory_size = VM_DEFAULT_MEMORY;
    options->cpus = 1;
    static const char *const without_value[] = {"-nographic", "-enable-kvm", "-no-reboot", "-h", "-help",
                                                 "-version", "-daemonize"};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (arg[0] != '-' || arg[1] == '\0')
            return error_message_set(error_message, -EINVAL, "%s: unexpected argument (options start with -)", arg);
        const char *option = arg[1] == '-' ? arg + 1 : arg; /* --m is -m, as in QEMU */
        bool flag = false;
        for (size_t f = 0; f < sizeof(without_value) / sizeof(without_value[0]); f++)
            flag = flag || !strcmp(option, without_value[f]);
        if (flag) {
            if (!strcmp(option, "-h") || !strcmp(option, "-help"))
                options->help = true;
            else if (!strcmp(option, "-version"))
                options->version = true;
            else if (!strcmp(option, "-daemonize"))
                options->daemonize = true;
            else if (!strcmp(option, "-nographic"))
                options->console_on_stdio = true;
            else if (!strcmp(option, "-no-reboot"))
                options->no_reboot = true;
            continue; /* -nographic, -enable-kvm: what lunavm always does */
        }
        if (i + 1 >= argc)
            return error_message_set(error_message, -EINVAL, "%s: requires an argument", arg);
        int ret = parse_one(options, option, argv[++i], error_message);
        if (ret < 0)
            return ret;
    }
    /* As QEMU: a daemon has no terminal, so asking for one is an error, not a silent /dev/null. */
    if (options->daemonize && options->console_on_stdio)
        return error_message_set(error_message, -EINVAL,
                                 "-daemonize cannot be used with -nographic, -serial stdio or -monitor stdio "
                                 "(a daemon's console output is discarded; use -monitor unix:...)");
    if (!options->help && !options->version && !options->kernel)
        return error_message_set(error_message, -EINVAL, "no -kernel given (lunavm boots Linux kernels only)");
    /* Whole 2 MiB pages: the RAM regions map with large pages and huge-page backing. */
    options->memory_size = (options->memory_size + (2u << 20) - 1) & ~((uint64_t)(2u << 20) - 1);
    return 0;
}

void vm_options_usage(void)
{
    printf("usage: lunavm -kernel KERNEL [options]\n"
           "A KVM virtual machine monitor for x86-64 Linux guests, with luna's disks.\n\n"
           "  -m SIZE             guest RAM (MiB, or with K/M/G/T suffix; default 512M)\n"
           "  -smp N              virtual CPUs (default 1, at most %u)\n"
           "  -kernel FILE        Linux bzImage (boot protocol 2.06+, 64-bit entry) or vmlinux (ELF)\n"
           "  -initrd FILE        initial ramdisk\n"
           "  -append CMDLINE     kernel command line (console=ttyS0 and the virtio devices are added)\n"
           "  -drive OPTIONS      a virtio-blk disk: file=PATH|nbd://...|iscsi://...,if=virtio,\n"
           "                      format=raw|qcow2|...,cache=writeback|writethrough|none|directsync|unsafe,\n"
           "                      readonly=on|off,id=NAME,serial=TEXT,aio=threads|io_uring,discard=unmap|ignore,\n"
           "                      snapshot=on|off (writes go to a temporary overlay, dropped at exit),\n"
           "                      reconnect-timeout=SECONDS (nbd://, iscsi://: how long requests wait for the\n"
           "                      server to come back, default 60; QEMU's file.reconnect-delay= too)\n"
           "  -name NAME          the VM's name (for messages)\n"
           "  -monitor stdio|unix:PATH,server,nowait|none\n"
           "                      the human monitor (info status|block|cpus, stop, cont, system_powerdown,\n"
           "                      system_reset, quit): on the console behind Ctrl-A c (stdio, the default),\n"
           "                      or on a Unix socket\n"
           "  -device virtio-rng-device\n"
           "                      a virtio entropy device fed from the host's getrandom\n"
           "  -daemonize          run in the background once the VM runs (console output discarded)\n"
           "  -pidfile FILE       write lunavm's process id to FILE (locked while it runs, removed at exit)\n"
           "  -no-reboot          end the VM when the guest reboots (or on system_reset) instead of resetting it\n"
           "  -nographic, -serial stdio|mon:stdio, -enable-kvm, -accel kvm, -cpu host\n"
           "                      accepted: this is what lunavm always does\n"
           "  -h, --help          this help;  --version  the version\n\n"
           "The console is ttyS0 on standard input and output; Ctrl-A x ends the VM,\n"
           "Ctrl-A c switches between the console and the monitor.\n"
           "Details: docs/lunavm.md\n",
           VM_MAX_CPUS);
}
