/*
 * vcpu: one virtual CPU and the thread that runs it.
 *
 * Set-up gives every vCPU its CPUID table (cpuid.h), boot MSRs and the
 * local APIC's LINT0 as ExtINT and LINT1 as NMI (virtual-wire mode, as a
 * BIOS leaves it); the bootstrap processor also gets the 64-bit entry
 * state (long_mode.h) with RIP at the kernel's 64-bit entry and RSI at the
 * zero page.  The others wait in KVM for the INIT/SIPI the guest sends.
 * The run loop dispatches port and MMIO exits to the buses until the VM
 * stops: vcpu_kick makes KVM_RUN return (immediate_exit and a signal).
 */
#ifndef LUNA_VMM_VCPU_H
#define LUNA_VMM_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct kvm_vm;
struct io_bus;

#define VCPU_KICK_SIGNAL SIGUSR1

/* Why a vCPU asks the VM to stop. */
enum vm_stop_reason {
    VM_STOP_NONE = 0,
    VM_STOP_RESET,      /* the guest rebooted (i8042 reset, triple fault, system event) */
    VM_STOP_SYSTEM_RESET, /* system_reset on the monitor */
    VM_STOP_POWER_OFF,  /* the guest powered off */
    VM_STOP_SIGNAL,     /* SIGINT/SIGTERM, or Ctrl-A x on the console */
    VM_STOP_ERROR,      /* KVM failed or the guest did something lunavm cannot handle */
};

/* The monitor's stop/cont: vCPUs park on the condition between two KVM_RUNs. */
struct vcpu_pause {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    bool paused;
    unsigned parked;
};

struct vcpu_environment {
    struct io_bus *ports;
    struct io_bus *mmio;
    atomic_bool *stopping;
    struct vcpu_pause *pause;
    void (*request_stop)(void *opaque, enum vm_stop_reason reason);
    void *opaque;
};

struct vcpu {
    unsigned index;
    int fd;
    struct kvm_run *run;
    size_t run_size;
    pthread_t thread;
    bool thread_started;
    atomic_int thread_id; /* the kernel's id, for the monitor's info cpus */
    const struct vcpu_environment *environment;
};

/* Create vCPU index and configure it (count vCPUs in all).  0 or -errno, with a message. */
int vcpu_create(struct vcpu *vcpu, struct kvm_vm *vm, unsigned index, unsigned count, char **error_message);

/* The bootstrap processor's registers: long mode at entry, zero page in RSI. */
int vcpu_set_boot_state(struct vcpu *vcpu, uint64_t entry, uint64_t zero_page, char **error_message);

/* Start the thread running the vCPU until the VM stops.  0 or -errno. */
int vcpu_start(struct vcpu *vcpu, const struct vcpu_environment *environment);

/* Make the vCPU leave KVM_RUN (any thread); it then sees the stopping flag. */
void vcpu_kick(struct vcpu *vcpu);
void vcpu_join(struct vcpu *vcpu);
void vcpu_destroy(struct vcpu *vcpu);

void vcpu_pause_init(struct vcpu_pause *pause);
void vcpu_pause_destroy(struct vcpu_pause *pause);
/* Park every vCPU (count of them, all started) and return once they are, or the VM stops. */
void vcpu_pause_all(struct vcpu_pause *pause, struct vcpu *vcpus, unsigned count, atomic_bool *stopping);
void vcpu_resume_all(struct vcpu_pause *pause);
/* The VM is stopping: parked vCPUs must wake up to see it. */
void vcpu_pause_release(struct vcpu_pause *pause);

/* Install the (empty) handler of VCPU_KICK_SIGNAL, once per process.  0 or -errno. */
int vcpu_install_kick_handler(void);

#endif
