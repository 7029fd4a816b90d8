#include "vmm/vcpu.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/error_message.h"
#include "common/log.h"
#include "vmm/cpuid.h"
#include "vmm/io_bus.h"
#include "vmm/kvm_vm.h"
#include "vmm/long_mode.h"
#include "vmm/memory_layout.h"

#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SYSCALL_MASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MSR_IA32_TSC 0x10
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_DEF_TYPE 0x2ff
#define MISC_ENABLE_FAST_STRING 0x1ull
#define MTRR_ENABLE_WRITE_BACK ((1ull << 11) | 6) /* MTRRs on, default type write-back */

#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_MODE_EXTINT 0x7u
#define APIC_MODE_NMI 0x4u

static int set_cpuid(struct vcpu *vcpu, const struct kvm_vm *vm, unsigned count)
{
    const struct kvm_cpuid2 *supported = vm->supported_cpuid;
    size_t size = sizeof(*supported) + supported->nent * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *cpuid = malloc(size);
    if (!cpuid)
        return -ENOMEM;
    memcpy(cpuid, supported, size);
    cpuid_adjust_for_vcpu(cpuid->entries, cpuid->nent, vcpu->index, count);
    int ret = ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid) < 0 ? -errno : 0;
    free(cpuid);
    return ret;
}

static int set_msrs(struct vcpu *vcpu)
{
    static const struct {
        uint32_t index;
        uint64_t value;
    } boot_msrs[] = {
        {MSR_IA32_SYSENTER_CS, 0}, {MSR_IA32_SYSENTER_ESP, 0}, {MSR_IA32_SYSENTER_EIP, 0},
        {MSR_STAR, 0}, {MSR_CSTAR, 0}, {MSR_KERNEL_GS_BASE, 0}, {MSR_SYSCALL_MASK, 0}, {MSR_LSTAR, 0},
        {MSR_IA32_TSC, 0},
        {MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING},
        /* Without it Linux sees every page uncached and boots at a crawl. */
        {MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITE_BACK},
    };
    enum { COUNT = sizeof(boot_msrs) / sizeof(boot_msrs[0]) };
    struct {
        struct kvm_msrs header;
        struct kvm_msr_entry entries[COUNT];
    } msrs;
    memset(&msrs, 0, sizeof(msrs));
    msrs.header.nmsrs = COUNT;
    for (unsigned i = 0; i < COUNT; i++) {
        msrs.entries[i].index = boot_msrs[i].index;
        msrs.entries[i].data = boot_msrs[i].value;
    }
    int ret = ioctl(vcpu->fd, KVM_SET_MSRS, &msrs);
    if (ret < 0)
        return -errno;
    return ret == COUNT ? 0 : -EINVAL; /* KVM stops at the first MSR it refuses */
}

static void set_lvt_mode(struct kvm_lapic_state *lapic, unsigned offset, uint32_t mode)
{
    uint32_t value;
    memcpy(&value, lapic->regs + offset, sizeof(value));
    value = (value & ~0x700u) | (mode << 8);
    memcpy(lapic->regs + offset, &value, sizeof(value));
}

static int set_local_interrupts(struct vcpu *vcpu)
{
    struct kvm_lapic_state lapic;
    if (ioctl(vcpu->fd, KVM_GET_LAPIC, &lapic) < 0)
        return -errno;
    set_lvt_mode(&lapic, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt_mode(&lapic, APIC_LVT1, APIC_MODE_NMI);
    return ioctl(vcpu->fd, KVM_SET_LAPIC, &lapic) < 0 ? -errno : 0;
}

int vcpu_create(struct vcpu *vcpu, struct kvm_vm *vm, unsigned index, unsigned count, char **error_message)
{
    memset(vcpu, 0, sizeof(*vcpu));
    vcpu->index = index;
    vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
    if (vcpu->fd < 0)
        return error_message_set(error_message, -errno, "KVM_CREATE_VCPU %u: %s", index, strerror(errno));
    vcpu->run_size = (size_t)vm->vcpu_mmap_size;
    void *run = mmap(NULL, vcpu->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
    if (run == MAP_FAILED) {
        int error = errno;
        close(vcpu->fd);
        vcpu->fd = -1;
        return error_message_set(error_message, -error, "mapping vCPU %u's kvm_run: %s", index, strerror(error));
    }
    vcpu->run = run;
    int ret = set_cpuid(vcpu, vm, count);
    if (ret < 0)
        return error_message_set(error_message, ret, "KVM_SET_CPUID2 on vCPU %u: %s", index, strerror(-ret));
    ret = set_msrs(vcpu);
    if (ret < 0)
        return error_message_set(error_message, ret, "KVM_SET_MSRS on vCPU %u: %s", index, strerror(-ret));
    ret = set_local_interrupts(vcpu);
    if (ret < 0)
        return error_message_set(error_message, ret, "setting vCPU %u's local APIC: %s", index, strerror(-ret));
    return 0;
}

int vcpu_set_boot_state(struct vcpu *vcpu, uint64_t entry, uint64_t zero_page, char **error_message)
{
    struct kvm_sregs sregs;
    if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
        return error_message_set(error_message, -errno, "KVM_GET_SREGS: %s", strerror(errno));
    long_mode_set_sregs(&sregs);
    if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
        return error_message_set(error_message, -errno, "KVM_SET_SREGS: %s", strerror(errno));
    struct kvm_regs regs = {
        .rflags = 0x2, /* bit 1 is reserved and always set; interrupts off */
        .rip = entry,
        .rsi = zero_page,
        .rsp = LAYOUT_BOOT_STACK_POINTER,
        .rbp = LAYOUT_BOOT_STACK_POINTER,
    };
    if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
        return error_message_set(error_message, -errno, "KVM_SET_REGS: %s", strerror(errno));
    struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80}; /* the x87 and SSE reset defaults */
    if (ioctl(vcpu->fd, KVM_SET_FPU, &fpu) < 0)
        return error_message_set(error_message, -errno, "KVM_SET_FPU: %s", strerror(errno));
    return 0;
}

static void handle_port_io(struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
        if (run->io.direction == KVM_EXIT_IO_OUT)
            io_bus_write(vcpu->environment->ports, run->io.port, data, run->io.size);
        else
            io_bus_read(vcpu->environment->ports, run->io.port, data, run->io.size);
    }
}

static void handle_mmio(struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    unsigned length = run->mmio.len <= sizeof(run->mmio.data) ? run->mmio.len : sizeof(run->mmio.data);
    if (run->mmio.is_write)
        io_bus_write(vcpu->environment->mmio, run->mmio.phys_addr, run->mmio.data, length);
    else
        io_bus_read(vcpu->environment->mmio, run->mmio.phys_addr, run->mmio.data, length);
}

/* Returns the reason to stop, or VM_STOP_NONE to go on running. */
static enum vm_stop_reason handle_exit(struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        handle_port_io(vcpu);
        return VM_STOP_NONE;
    case KVM_EXIT_MMIO:
        handle_mmio(vcpu);
        return VM_STOP_NONE;
    case KVM_EXIT_INTR:
        return VM_STOP_NONE;
    case KVM_EXIT_SHUTDOWN: /* a triple fault: how a PC without a reset device reboots */
        return VM_STOP_RESET;
    case KVM_EXIT_SYSTEM_EVENT:
        return run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN ? VM_STOP_POWER_OFF : VM_STOP_RESET;
    case KVM_EXIT_HLT: /* only without an in-kernel LAPIC; here it means the guest halted for good */
        return VM_STOP_POWER_OFF;
    case KVM_EXIT_FAIL_ENTRY:
        log_error("vCPU %u: KVM could not enter the guest (hardware reason 0x%llx)", vcpu->index,
                  (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        return VM_STOP_ERROR;
    case KVM_EXIT_INTERNAL_ERROR:
        log_error("vCPU %u: KVM internal error, suberror %u", vcpu->index, run->internal.suberror);
        return VM_STOP_ERROR;
    default:
        log_error("vCPU %u: unhandled KVM exit reason %u", vcpu->index, run->exit_reason);
        return VM_STOP_ERROR;
    }
}

void vcpu_pause_init(struct vcpu_pause *pause)
{
    pthread_mutex_init(&pause->lock, NULL);
    pthread_cond_init(&pause->changed, NULL);
    pause->paused = false;
    pause->parked = 0;
}

void vcpu_pause_destroy(struct vcpu_pause *pause)
{
    pthread_cond_destroy(&pause->changed);
    pthread_mutex_destroy(&pause->lock);
}

void vcpu_pause_all(struct vcpu_pause *pause, struct vcpu *vcpus, unsigned count, atomic_bool *stopping)
{
    pthread_mutex_lock(&pause->lock);
    pause->paused = true;
    pthread_mutex_unlock(&pause->lock);
    for (unsigned i = 0; i < count; i++)
        vcpu_kick(&vcpus[i]);
    pthread_mutex_lock(&pause->lock);
    /* A vCPU that ended (the guest rebooted meanwhile) never parks: the stop wakes us instead. */
    while (pause->parked < count && pause->paused && !atomic_load(stopping))
        pthread_cond_wait(&pause->changed, &pause->lock);
    pthread_mutex_unlock(&pause->lock);
}

void vcpu_resume_all(struct vcpu_pause *pause)
{
    pthread_mutex_lock(&pause->lock);
    pause->paused = false;
    pthread_cond_broadcast(&pause->changed);
    pthread_mutex_unlock(&pause->lock);
}

void vcpu_pause_release(struct vcpu_pause *pause)
{
    pthread_mutex_lock(&pause->lock);
    pthread_cond_broadcast(&pause->changed);
    pthread_mutex_unlock(&pause->lock);
}

/* Wait here while the VM is paused; true if it was (the caller then re-checks stopping). */
static bool park_if_paused(struct vcpu *vcpu)
{
    const struct vcpu_environment *environment = vcpu->environment;
    struct vcpu_pause *pause = environment->pause;
    if (!pause)
        return false;
    pthread_mutex_lock(&pause->lock);
    if (!pause->paused) {
        pthread_mutex_unlock(&pause->lock);
        return false;
    }
    pause->parked++;
    pthread_cond_broadcast(&pause->changed);
    while (pause->paused && !atomic_load(environment->stopping))
        pthread_cond_wait(&pause->changed, &pause->lock);
    pause->parked--;
    pthread_mutex_unlock(&pause->lock);
    return true;
}

static void *vcpu_thread(void *opaque)
{
    struct vcpu *vcpu = opaque;
    const struct vcpu_environment *environment = vcpu->environment;
    /* Only the kick signal reaches vCPU threads: it interrupts KVM_RUN. */
    sigset_t kick;
    sigemptyset(&kick);
    sigaddset(&kick, VCPU_KICK_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
    atomic_store(&vcpu->thread_id, (int)gettid());

    enum vm_stop_reason reason = VM_STOP_NONE;
    while (reason == VM_STOP_NONE && !atomic_load(environment->stopping)) {
        if (park_if_paused(vcpu))
            continue;
        if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                /*
                 * Kicked: by a stop (the loop condition sees it; its flag was
                 * set before immediate_exit) or a pause (park_if_paused sees
                 * it).  Clear immediate_exit so a pause undone before we
                 * parked does not make every KVM_RUN return at once.
                 */
                __atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
                continue;
            }
            log_error("vCPU %u: KVM_RUN: %s", vcpu->index, strerror(errno));
            reason = VM_STOP_ERROR;
            break;
        }
        reason = handle_exit(vcpu);
    }
    if (reason != VM_STOP_NONE)
        environment->request_stop(environment->opaque, reason);
    return NULL;
}

int vcpu_start(struct vcpu *vcpu, const struct vcpu_environment *environment)
{
    vcpu->environment = environment;
    int ret = pthread_create(&vcpu->thread, NULL, vcpu_thread, vcpu);
    if (ret != 0)
        return -ret;
    vcpu->thread_started = true;
    return 0;
}

void vcpu_kick(struct vcpu *vcpu)
{
    /* immediate_exit covers the window between the flag check and KVM_RUN, the signal the rest. */
    __atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    if (vcpu->thread_started)
        pthread_kill(vcpu->thread, VCPU_KICK_SIGNAL);
}

void vcpu_join(struct vcpu *vcpu)
{
    if (vcpu->thread_started)
        pthread_join(vcpu->thread, NULL);
    vcpu->thread_started = false;
}

void vcpu_destroy(struct vcpu *vcpu)
{
    if (vcpu->run)
        munmap(vcpu->run, vcpu->run_size);
    if (vcpu->fd >= 0)
        close(vcpu->fd);
    vcpu->run = NULL;
    vcpu->fd = -1;
}

static void kick_handler(int signal_number)
{
    (void)signal_number; /* its only job is to interrupt KVM_RUN */
}

int vcpu_install_kick_handler(void)
{
    struct sigaction action = {.sa_handler = kick_handler};
    sigemptyset(&action.sa_mask);
    return sigaction(VCPU_KICK_SIGNAL, &action, NULL) < 0 ? -errno : 0;
}
