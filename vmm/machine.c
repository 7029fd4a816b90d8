#include "vmm/machine.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "block/aio.h"
#include "block/bdev.h"
#include "block/threadpool.h"
#include "common/log.h"
#include "vmm/acpi_pm.h"
#include "vmm/acpi_tables.h"
#include "vmm/cmos_rtc.h"
#include "vmm/console.h"
#include "vmm/drive_snapshot.h"
#include "vmm/guest_memory.h"
#include "vmm/i8042.h"
#include "vmm/io_bus.h"
#include "vmm/io_thread.h"
#include "vmm/kernel_loader.h"
#include "vmm/kvm_vm.h"
#include "vmm/memory_layout.h"
#include "vmm/monitor.h"
#include "vmm/mptable.h"
#include "vmm/serial_8250.h"
#include "vmm/vcpu.h"
#include "vmm/virtio_blk.h"
#include "vmm/virtio_rng.h"

#define STOP_SIGNAL SIGUSR2       /* a thread asks the main thread to stop the VM */
#define POST_CODE_PORT 0x80u      /* Linux's I/O delay port: written constantly, means nothing */

struct virtio_irq {
    struct machine *machine;
    unsigned irq;
};

struct machine {
    const struct vm_options *options;
    struct guest_memory memory;
    struct kvm_vm vm;
    struct io_bus ports;
    struct io_bus mmio;
    struct serial_8250 uart;
    struct console console;
    struct i8042 keyboard_controller;
    struct cmos_rtc rtc;
    struct acpi_pm power_management;
    bool power_management_ready; /* its lock exists */
    int post_code_fd;
    struct bdev *disks[VM_MAX_DRIVES];
    struct bdev *snapshot_bases[VM_MAX_DRIVES]; /* snapshot=on: the disk below disks[i], the overlay */
    struct virtio_blk *blk[VM_MAX_DRIVES];
    struct virtio_irq blk_irq[VM_MAX_DRIVES];
    struct virtio_rng *rng; /* -device virtio-rng-device: the virtio-mmio window after the disks */
    struct virtio_irq rng_irq;
    unsigned disk_count;
    struct vcpu *vcpus;
    unsigned vcpu_count;
    struct io_thread io;
    struct vcpu_pause pause;
    struct monitor monitor;
    struct monitor_target monitor_target;
    atomic_bool stopping;
    atomic_int stop_reason;
    int flush_failures;
};

unsigned machine_virtio_irq(unsigned index)
{
    /* 8 is the RTC's, 9 the ACPI SCI's: a level-triggered line shared with a disk's
     * pulses would lose the power button event. */
    unsigned irq = 5 + index;
    return irq >= 8 ? irq + 2 : irq;
}

char *machine_build_cmdline(const char *append, unsigned disk_count)
{
    const char *user = append ? append : "";
    bool has_console = strstr(user, "console=") != NULL;
    size_t size = strlen(user) + 32 + (size_t)disk_count * 64;
    char *cmdline = malloc(size);
    if (!cmdline)
        return NULL;
    size_t length = (size_t)snprintf(cmdline, size, "%s%s%s", user, *user && !has_console ? " " : "",
                                     has_console ? "" : "console=ttyS0");
    for (unsigned i = 0; i < disk_count; i++) {
        char device[64];
        virtio_mmio_cmdline(device, sizeof(device), LAYOUT_VIRTIO_MMIO_BASE + i * LAYOUT_VIRTIO_MMIO_STRIDE,
                            LAYOUT_VIRTIO_MMIO_SIZE, machine_virtio_irq(i));
        length += (size_t)snprintf(cmdline + length, size - length, "%s%s", length ? " " : "", device);
    }
    return cmdline;
}

static void request_stop(void *opaque, enum vm_stop_reason reason)
{
    struct machine *machine = opaque;
    int expected = VM_STOP_NONE;
    /* The first reason wins; the signal wakes the main thread in sigwaitinfo. */
    if (atomic_compare_exchange_strong(&machine->stop_reason, &expected, (int)reason))
        kill(getpid(), STOP_SIGNAL);
}

static void console_quit(void *opaque)
{
    request_stop(opaque, VM_STOP_SIGNAL);
}

static void keyboard_reset(void *opaque)
{
    request_stop(opaque, VM_STOP_RESET);
}

static void acpi_power_off(void *opaque)
{
    request_stop(opaque, VM_STOP_POWER_OFF);
}

static void acpi_set_sci(void *opaque, bool level)
{
    struct machine *machine = opaque;
    /* As for the UART: a failure would mean the VM is gone, which the vCPU loop reports. */
    (void)kvm_vm_set_irq_line(&machine->vm, ACPI_SCI_IRQ, level);
}

static void uart_set_irq(void *opaque, bool level)
{
    struct machine *machine = opaque;
    /* Errors here would mean the VM is gone; the vCPU loop reports that. */
    (void)kvm_vm_set_irq_line(&machine->vm, SERIAL_COM1_IRQ, level);
}

static void virtio_raise_irq(void *opaque)
{
    struct virtio_irq *line = opaque;
    (void)kvm_vm_pulse_irq(&line->machine->vm, line->irq);
}

static void uart_receive_ready(void *opaque)
{
    struct machine *machine = opaque;
    console_receive_ready(&machine->console);
}

static void uart_read(void *opaque, uint64_t offset, uint8_t *data, unsigned length)
{
    (void)length;
    data[0] = serial_8250_read(opaque, (unsigned)offset);
}

static void uart_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned length)
{
    (void)length;
    serial_8250_write(opaque, (unsigned)offset, data[0]);
}

static void bdev_event(void *opaque, const char *message)
{
    log_warn("%s", message);
    (void)opaque;
}

static int open_disks(struct machine *machine)
{
    const struct vm_options *options = machine->options;
    for (unsigned i = 0; i < options->drive_count; i++) {
        const struct vm_drive *drive = &options->drives[i];
        struct bdev_options open_options;
        bdev_options_init(&open_options);
        open_options.path = drive->file;
        open_options.format = drive->format;
        open_options.readonly = drive->readonly;
        open_options.cache = drive->cache;
        open_options.aio = drive->aio;
        open_options.discard = drive->discard;
        open_options.reconnect_timeout = drive->reconnect_timeout;
        open_options.event = bdev_event;
        char *message = NULL;
        int ret = drive->snapshot && !drive->readonly
                      ? drive_snapshot_open(&open_options, &machine->snapshot_bases[i], &machine->disks[i], &message)
                      : bdev_open(&open_options, &machine->disks[i], &message);
        if (ret < 0) {
            log_error("-drive %s: %s", drive->id ? drive->id : drive->file, message ? message : strerror(-ret));
            free(message);
            return ret;
        }
        machine->disk_count++;
        if (machine->disks[i]->notice)
            log_warn("%s", machine->disks[i]->notice);
    }
    return 0;
}

static int setup_legacy_devices(struct machine *machine)
{
    struct serial_8250_callbacks callbacks = {
        .set_irq = uart_set_irq,
        .transmit = console_transmit,
        .receive_ready = uart_receive_ready,
        .opaque = machine,
    };
    serial_8250_init(&machine->uart, &callbacks);
    int ret = io_bus_register(&machine->ports, SERIAL_COM1_PORT, SERIAL_PORT_COUNT, uart_read, uart_write,
                              &machine->uart);
    if (ret == 0) {
        machine->keyboard_controller = (struct i8042){.reset = keyboard_reset, .opaque = machine};
        ret = i8042_register(&machine->keyboard_controller, &machine->ports);
    }
    if (ret == 0)
        ret = cmos_rtc_register(&machine->rtc, &machine->ports);
    if (ret == 0) {
        machine->power_management.power_off = acpi_power_off;
        machine->power_management.set_sci = acpi_set_sci;
        machine->power_management.opaque = machine;
        ret = acpi_pm_register(&machine->power_management, &machine->ports);
    }
    if (ret < 0)
        return ret;
    /* Port 0x80 writes end in an eventfd inside KVM: no exit at all.  Best effort. */
    machine->post_code_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (machine->post_code_fd >= 0 &&
        kvm_vm_add_ioeventfd(&machine->vm, POST_CODE_PORT, 1, true, machine->post_code_fd) < 0)
        log_debug("no ioeventfd for port 0x80: its writes will exit to lunavm");
    return 0;
}

static int setup_virtio_disks(struct machine *machine)
{
    for (unsigned i = 0; i < machine->disk_count; i++) {
        const struct vm_drive *drive = &machine->options->drives[i];
        struct virtio_blk *blk = calloc(1, sizeof(*blk));
        if (!blk)
            return -ENOMEM;
        int ret = virtio_blk_init(blk, machine->disks[i], &machine->memory, drive->readonly, drive->serial);
        if (ret < 0) {
            free(blk);
            return ret;
        }
        machine->blk[i] = blk;
        machine->blk_irq[i] = (struct virtio_irq){machine, machine_virtio_irq(i)};
        blk->transport.raise_irq = virtio_raise_irq;
        blk->transport.irq_opaque = &machine->blk_irq[i];
        uint64_t base = LAYOUT_VIRTIO_MMIO_BASE + i * LAYOUT_VIRTIO_MMIO_STRIDE;
        ret = io_bus_register(&machine->mmio, base, LAYOUT_VIRTIO_MMIO_SIZE, virtio_mmio_read, virtio_mmio_write,
                              &blk->transport);
        if (ret < 0)
            return ret;
        /* QueueNotify writes signal the I/O thread from inside KVM; without it the vCPU writes the eventfd. */
        if (kvm_vm_add_ioeventfd(&machine->vm, base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, false, blk->notify_fd) < 0)
            log_debug("no ioeventfd for disk %u: notifications exit to lunavm", i);
    }
    return 0;
}

static int setup_virtio_rng(struct machine *machine)
{
    machine->rng = calloc(1, sizeof(*machine->rng));
    if (!machine->rng)
        return -ENOMEM;
    virtio_rng_init(machine->rng, &machine->memory);
    unsigned index = machine->disk_count; /* announced after the disks, as build_cmdline and ACPI count */
    machine->rng_irq = (struct virtio_irq){machine, machine_virtio_irq(index)};
    machine->rng->transport.raise_irq = virtio_raise_irq;
    machine->rng->transport.irq_opaque = &machine->rng_irq;
    return io_bus_register(&machine->mmio, LAYOUT_VIRTIO_MMIO_BASE + index * LAYOUT_VIRTIO_MMIO_STRIDE,
                           LAYOUT_VIRTIO_MMIO_SIZE, virtio_mmio_read, virtio_mmio_write, &machine->rng->transport);
}

static bool monitor_running(void *opaque)
{
    struct machine *machine = opaque;
    pthread_mutex_lock(&machine->pause.lock);
    bool running = !machine->pause.paused;
    pthread_mutex_unlock(&machine->pause.lock);
    return running;
}

static void monitor_stop(void *opaque)
{
    struct machine *machine = opaque;
    vcpu_pause_all(&machine->pause, machine->vcpus, machine->vcpu_count, &machine->stopping);
}

static void monitor_cont(void *opaque)
{
    struct machine *machine = opaque;
    vcpu_resume_all(&machine->pause);
}

static void monitor_quit(void *opaque)
{
    request_stop(opaque, VM_STOP_SIGNAL);
}

static void monitor_powerdown(void *opaque)
{
    struct machine *machine = opaque;
    acpi_pm_press_power_button(&machine->power_management);
}

static void monitor_reset(void *opaque)
{
    request_stop(opaque, VM_STOP_SYSTEM_RESET);
}

static int monitor_cpu_thread_id(void *opaque, unsigned index)
{
    struct machine *machine = opaque;
    return atomic_load(&machine->vcpus[index].thread_id);
}

static void monitor_drive(void *opaque, unsigned index, struct monitor_drive_info *info)
{
    struct machine *machine = opaque;
    const struct vm_drive *drive = &machine->options->drives[index];
    *info = (struct monitor_drive_info){
        .id = drive->id ? drive->id : "",
        .file = drive->file,
        .format = machine->disks[index]->ops->name,
        .cache = bdev_cache_mode_name(drive->cache),
        .read_only = machine->blk[index]->read_only,
    };
}

static int open_monitor(struct machine *machine)
{
    machine->monitor_target = (struct monitor_target){
        .running = monitor_running,
        .stop = monitor_stop,
        .cont = monitor_cont,
        .quit = monitor_quit,
        .powerdown = monitor_powerdown,
        .reset = monitor_reset,
        .cpu_count = machine->vcpu_count,
        .cpu_thread_id = monitor_cpu_thread_id,
        .drive_count = machine->disk_count,
        .drive = monitor_drive,
        .opaque = machine,
    };
    char *message = NULL;
    int ret = monitor_open(&machine->monitor, machine->options->monitor ? machine->options->monitor : "none",
                           &machine->monitor_target, &message);
    if (ret < 0) {
        log_error("%s", message ? message : strerror(-ret));
        free(message);
    }
    return ret;
}

static void io_started(void *opaque)
{
    struct machine *machine = opaque;
    monitor_attach(&machine->monitor, machine->io.loop);
    console_attach(&machine->console, machine->io.loop);
    for (unsigned i = 0; i < machine->disk_count; i++)
        virtio_blk_attach(machine->blk[i], machine->io.ctx);
}

static void flush_done(struct bdev_io *io)
{
    (void)io;
}

static void io_stopping(void *opaque)
{
    struct machine *machine = opaque;
    monitor_detach(&machine->monitor);
    console_detach(&machine->console);
    for (unsigned i = 0; i < machine->disk_count; i++)
        virtio_blk_detach(machine->blk[i]);
    io_drain_requests(machine->io.ctx); /* the guest's requests in flight finish */
    for (unsigned i = 0; i < machine->disk_count; i++) {
        if (bdev_is_read_only(machine->disks[i]))
            continue;
        struct bdev_io io = {.op = BDEV_OP_FLUSH, .ctx = machine->io.ctx, .complete = flush_done};
        bdev_submit(machine->disks[i], &io);
        io_drain_requests(machine->io.ctx);
        if (io.result < 0) {
            log_error("-drive %s: flush at exit failed: %s", machine->options->drives[i].file, strerror(-io.result));
            machine->flush_failures++;
        }
    }
}

static int create_vcpus(struct machine *machine, uint64_t entry)
{
    unsigned count = machine->options->cpus;
    if ((int)count > machine->vm.max_vcpus) {
        log_error("-smp %u: this KVM allows at most %d vCPUs", count, machine->vm.max_vcpus);
        return -EINVAL;
    }
    machine->vcpus = calloc(count, sizeof(*machine->vcpus));
    if (!machine->vcpus)
        return -ENOMEM;
    for (unsigned i = 0; i < count; i++) {
        char *message = NULL;
        int ret = vcpu_create(&machine->vcpus[i], &machine->vm, i, count, &message);
        if (ret == 0 || machine->vcpus[i].fd >= 0)
            machine->vcpu_count++;
        if (ret == 0 && i == 0)
            ret = vcpu_set_boot_state(&machine->vcpus[0], entry, LAYOUT_ZERO_PAGE_ADDRESS, &message);
        if (ret < 0) {
            log_error("%s", message ? message : strerror(-ret));
            free(message);
            return ret;
        }
    }
    return 0;
}

/*
 * What each boot gets anew, since a reset (system_reset, a guest reboot)
 * tears it down and builds it again: the kernel and its boot structures in
 * RAM, the KVM VM (vCPUs, irqchip, PIT), the devices and the I/O thread's
 * loop.  The disks, the monitor and the console belong to the machine and
 * stay.  Errors are logged here.
 */
static int boot_prepare(struct machine *machine)
{
    const struct vm_options *options = machine->options;
    char *message = NULL;
    unsigned virtio_count = machine->disk_count + (options->rng ? 1 : 0);
    char *cmdline = machine_build_cmdline(options->append, virtio_count);
    if (!cmdline) {
        log_error("out of memory building the kernel command line");
        return -ENOMEM;
    }
    struct acpi_mmio_device devices[ACPI_MAX_DEVICES];
    for (unsigned i = 0; i < virtio_count; i++)
        devices[i] = (struct acpi_mmio_device){LAYOUT_VIRTIO_MMIO_BASE + i * LAYOUT_VIRTIO_MMIO_STRIDE,
                                               LAYOUT_VIRTIO_MMIO_SIZE, machine_virtio_irq(i)};
    struct acpi_layout acpi = {.cpus = options->cpus, .ioapic_id = mptable_ioapic_id(options->cpus),
                               .devices = devices, .device_count = virtio_count};
    struct kernel_boot boot = {.kernel_path = options->kernel, .initrd_path = options->initrd, .cmdline = cmdline,
                               .cpus = options->cpus, .acpi = &acpi};
    uint64_t entry = 0;
    int ret = kernel_load(&boot, &machine->memory, &entry, &message);
    if (ret == 0)
        log_debug("kernel command line: %s", cmdline);
    free(cmdline);
    if (ret < 0) {
        log_error("%s", message ? message : strerror(-ret));
        free(message);
        return ret;
    }
    /* KVM last: a wrong kernel path or disk is reported the same with or without /dev/kvm. */
    ret = kvm_vm_create(&machine->vm, &message);
    if (ret == 0)
        ret = kvm_vm_add_memory(&machine->vm, &machine->memory, &message);
    if (ret < 0) {
        log_error("%s", message ? message : strerror(-ret));
        free(message);
        return ret;
    }
    ret = acpi_pm_init(&machine->power_management);
    machine->power_management_ready = ret == 0;
    if (ret == 0)
        ret = setup_legacy_devices(machine);
    if (ret == 0)
        ret = setup_virtio_disks(machine);
    if (ret == 0 && options->rng)
        ret = setup_virtio_rng(machine);
    if (ret < 0) {
        log_error("cannot set up the devices: %s", strerror(-ret));
        return ret;
    }
    ret = io_thread_init(&machine->io);
    if (ret < 0) {
        log_error("cannot set up the I/O thread's loop: %s", strerror(-ret));
        return ret;
    }
    machine->io.on_start = io_started;
    machine->io.on_stop = io_stopping;
    machine->io.opaque = machine;
    return create_vcpus(machine, entry);
}

/* Undo boot_prepare (the threads are joined): the next boot starts from a new VM and clean RAM. */
static void boot_teardown(struct machine *machine)
{
    for (unsigned i = 0; i < machine->vcpu_count; i++)
        vcpu_destroy(&machine->vcpus[i]);
    free(machine->vcpus);
    machine->vcpus = NULL;
    machine->vcpu_count = 0;
    io_thread_destroy(&machine->io);
    for (unsigned i = 0; i < VM_MAX_DRIVES; i++) {
        if (machine->blk[i]) {
            virtio_blk_destroy(machine->blk[i]);
            free(machine->blk[i]);
            machine->blk[i] = NULL;
        }
    }
    if (machine->rng) {
        virtio_rng_destroy(machine->rng);
        free(machine->rng);
        machine->rng = NULL;
    }
    if (machine->post_code_fd >= 0)
        close(machine->post_code_fd);
    machine->post_code_fd = -1;
    serial_8250_destroy(&machine->uart);
    if (machine->power_management_ready)
        acpi_pm_destroy(&machine->power_management);
    machine->power_management_ready = false;
    if (machine->vm.kvm_fd >= 0 || machine->vm.vm_fd >= 0)
        kvm_vm_close(&machine->vm);
    machine->vm.kvm_fd = machine->vm.vm_fd = -1;
    machine->ports.count = 0;
    machine->mmio.count = 0;
}

/* Everything up to the threads.  Errors are logged here. */
static int prepare(struct machine *machine)
{
    const struct vm_options *options = machine->options;
    int ret = guest_memory_allocate(&machine->memory, options->memory_size);
    if (ret < 0) {
        log_error("cannot map %llu MiB of guest RAM: %s", (unsigned long long)(options->memory_size >> 20),
                  strerror(-ret));
        return ret;
    }
    ret = open_disks(machine);
    if (ret == 0)
        ret = boot_prepare(machine);
    return ret < 0 ? ret : open_monitor(machine);
}

/* Wait for a stop reason; returns it. */
static enum vm_stop_reason wait_for_stop(struct machine *machine, const sigset_t *signals)
{
    for (;;) {
        siginfo_t info;
        int number = sigwaitinfo(signals, &info);
        if (number < 0)
            continue; /* EINTR */
        if (number != STOP_SIGNAL)
            request_stop(machine, VM_STOP_SIGNAL);
        int reason = atomic_load(&machine->stop_reason);
        if (reason != VM_STOP_NONE)
            return (enum vm_stop_reason)reason;
    }
}

/* One boot: start the threads, wait for a stop reason (*reason), stop them. */
static int run_threads(struct machine *machine, const sigset_t *signals, void (*ready)(void *opaque),
                       void *ready_opaque, enum vm_stop_reason *reason_out)
{
    struct vcpu_environment environment = {
        .ports = &machine->ports,
        .mmio = &machine->mmio,
        .stopping = &machine->stopping,
        .pause = &machine->pause,
        .request_stop = request_stop,
        .opaque = machine,
    };
    /* vCPUs first: the monitor, served by the I/O thread, may pause them at once. */
    int ret = 0;
    for (unsigned i = 0; i < machine->vcpu_count && ret == 0; i++)
        ret = vcpu_start(&machine->vcpus[i], &environment);
    if (ret < 0)
        log_error("cannot start the vCPU threads: %s", strerror(-ret));
    if (ret == 0) {
        ret = io_thread_start(&machine->io);
        if (ret < 0)
            log_error("cannot start the I/O thread: %s", strerror(-ret));
    }
    enum vm_stop_reason reason;
    if (ret < 0) {
        reason = VM_STOP_ERROR;
    } else {
        if (ready)
            ready(ready_opaque);
        reason = wait_for_stop(machine, signals);
    }
    atomic_store(&machine->stopping, true);
    vcpu_pause_release(&machine->pause); /* parked vCPUs, and a monitor waiting for them */
    for (unsigned i = 0; i < machine->vcpu_count; i++)
        vcpu_kick(&machine->vcpus[i]);
    for (unsigned i = 0; i < machine->vcpu_count; i++)
        vcpu_join(&machine->vcpus[i]);
    io_thread_stop(&machine->io);
    static const char *const names[] = {
        [VM_STOP_RESET] = "the guest rebooted",
        [VM_STOP_SYSTEM_RESET] = "system_reset",
        [VM_STOP_POWER_OFF] = "the guest powered off",
        [VM_STOP_SIGNAL] = "stopped on request",
        [VM_STOP_ERROR] = "stopped on an error",
    };
    bool resetting = (reason == VM_STOP_RESET || reason == VM_STOP_SYSTEM_RESET) && !machine->options->no_reboot;
    if (reason != VM_STOP_NONE)
        log_info("%s%s%s%s", machine->options->name ? machine->options->name : "",
                 machine->options->name ? ": " : "", names[reason], resetting ? ": resetting" : "");
    *reason_out = reason;
    return reason == VM_STOP_ERROR || machine->flush_failures ? -EIO : 0;
}

/* Between two boots: the old one's VM and devices go, RAM reads as zeroes, the new one is built. */
static int reset_machine(struct machine *machine)
{
    boot_teardown(machine);
    atomic_store(&machine->stopping, false);
    atomic_store(&machine->stop_reason, VM_STOP_NONE);
    vcpu_resume_all(&machine->pause); /* the new boot runs, as after QEMU's system_reset of a running VM */
    int ret = guest_memory_clear(&machine->memory);
    if (ret < 0) {
        log_error("cannot clear guest RAM for the reset: %s", strerror(-ret));
        return ret;
    }
    return boot_prepare(machine);
}

static void teardown(struct machine *machine)
{
    boot_teardown(machine);
    monitor_close(&machine->monitor);
    vcpu_pause_destroy(&machine->pause);
    for (unsigned i = 0; i < machine->disk_count; i++) {
        bdev_close(machine->disks[i]);
        if (machine->snapshot_bases[i]) /* after its overlay, which borrows it */
            bdev_close(machine->snapshot_bases[i]);
    }
    threadpool_shutdown(); /* bdev_close hands descriptors to the pool */
    guest_memory_free(&machine->memory);
    console_restore(&machine->console);
}

int machine_run(const struct vm_options *options, void (*ready)(void *opaque), void *ready_opaque)
{
    static struct machine machine; /* large, and request_stop reaches it from any thread */
    memset(&machine, 0, sizeof(machine));
    machine.options = options;
    machine.post_code_fd = -1;
    machine.vm.kvm_fd = machine.vm.vm_fd = -1;
    machine.monitor.listen_fd = -1;
    vcpu_pause_init(&machine.pause);
    atomic_init(&machine.stopping, false);
    atomic_init(&machine.stop_reason, VM_STOP_NONE);

    /* Every thread inherits this mask: only the main thread takes these, in sigwaitinfo. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGHUP);
    sigaddset(&signals, STOP_SIGNAL);
    sigset_t blocked = signals;
    sigaddset(&blocked, VCPU_KICK_SIGNAL);
    if (pthread_sigmask(SIG_BLOCK, &blocked, NULL) != 0 || vcpu_install_kick_handler() < 0) {
        log_error("cannot set up signal handling");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    int ret = prepare(&machine);
    if (ret == 0) {
        machine.console.quit = console_quit;
        machine.console.opaque = &machine;
        if (monitor_spec_on_console(options->monitor))
            machine.console.monitor_target = &machine.monitor_target;
        ret = console_setup(&machine.console, &machine.uart);
        if (ret < 0)
            log_error("cannot put the terminal in raw mode: %s", strerror(-ret));
    }
    while (ret == 0) {
        enum vm_stop_reason reason = VM_STOP_NONE;
        ret = run_threads(&machine, &signals, ready, ready_opaque, &reason);
        ready = NULL; /* -daemonize's parent goes once */
        if (ret < 0 || (reason != VM_STOP_RESET && reason != VM_STOP_SYSTEM_RESET) || options->no_reboot)
            break;
        ret = reset_machine(&machine);
    }
    teardown(&machine);
    return ret < 0 ? 1 : 0;
}
