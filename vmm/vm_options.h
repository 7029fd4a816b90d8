/*
 * vm_options: lunavm's command line, a subset of qemu-system-x86_64's.
 *
 * Options take one or two leading dashes, as QEMU's do.  What lunavm
 * cannot do is refused with a message naming the option, never ignored;
 * options that only ask for what lunavm always does (-nographic,
 * -serial stdio, -enable-kvm) are accepted.
 */
#ifndef LUNA_VMM_VM_OPTIONS_H
#define LUNA_VMM_VM_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "block/bdev.h"

#define VM_MAX_DRIVES 16u
#define VM_DEFAULT_MEMORY (512ull << 20) /* QEMU's default is 128 MiB; a Debian kernel wants more */
#define VM_MIN_MEMORY (32ull << 20)
#define VM_MAX_MEMORY (1ull << 40)
#define VM_MAX_CPUS 254u

struct vm_drive {
    char *file;
    char *id;
    char *serial;
    enum bdev_format format;
    enum bdev_cache_mode cache;
    enum bdev_aio_engine aio;
    bool readonly;
    bool discard;
    bool snapshot; /* writes go to a temporary overlay (drive_snapshot.h) */
    unsigned reconnect_timeout; /* nbd:// and iscsi://: seconds unreachable before requests fail; 0: 60 */
};

struct vm_options {
    uint64_t memory_size;
    unsigned cpus;
    char *kernel;
    char *initrd;
    char *append;
    char *name;
    char *monitor; /* -monitor value; NULL: on the console (Ctrl-A c), as QEMU's -nographic */
    char *pidfile; /* -pidfile FILE; NULL: none */
    struct vm_drive drives[VM_MAX_DRIVES];
    unsigned drive_count;
    bool help;
    bool version;
    bool rng;             /* -device virtio-rng-device */
    bool daemonize;       /* -daemonize: detach once the VM runs (vmm/daemonize.h) */
    bool no_reboot;       /* -no-reboot: a reset (guest reboot, system_reset) ends the VM, as QEMU's */
    bool console_on_stdio; /* -nographic, -serial stdio or -monitor stdio given: refused with -daemonize */
};

/* 0, or -EINVAL with a message naming the option. */
int vm_options_parse(int argc, char **argv, struct vm_options *options, char **error_message);
void vm_options_clear(struct vm_options *options);

/* "-m" values: a number of MiB, or with a K, M, G or T suffix.  0 or -EINVAL. */
int vm_parse_memory_size(const char *text, uint64_t *bytes);

/* One -drive value ("file=disk.img,if=virtio,format=raw").  0 or -EINVAL with a message. */
int vm_parse_drive(const char *text, struct vm_drive *drive, char **error_message);

void vm_options_usage(void);

#endif
