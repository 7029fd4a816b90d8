#include "vmm/kvm_vm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/error_message.h"
#include "vmm/memory_layout.h"

#define CPUID_MAX_ENTRIES 256

static int fetch_supported_cpuid(struct kvm_vm *vm)
{
    /* The table's size is unknown in advance: grow until KVM stops saying E2BIG. */
    for (unsigned capacity = 64; capacity <= 4 * CPUID_MAX_ENTRIES; capacity *= 2) {
        struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + capacity * sizeof(struct kvm_cpuid_entry2));
        if (!cpuid)
            return -ENOMEM;
        cpuid->nent = capacity;
        if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) == 0) {
            vm->supported_cpuid = cpuid;
            return 0;
        }
        int error = errno;
        free(cpuid);
        if (error != E2BIG)
            return -error;
    }
    return -E2BIG;
}

static int require_capability(struct kvm_vm *vm, int capability, const char *name, char **error_message)
{
    int ret = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, capability);
    if (ret <= 0)
        return error_message_set(error_message, -ENOTSUP, "/dev/kvm lacks %s", name);
    return 0;
}

int kvm_vm_create(struct kvm_vm *vm, char **error_message)
{
    memset(vm, 0, sizeof(*vm));
    vm->vm_fd = -1;
    vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0)
        return error_message_set(error_message, -errno, "cannot open /dev/kvm: %s", strerror(errno));
    int version = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION)
        return error_message_set(error_message, -ENOTSUP, "/dev/kvm speaks API version %d, lunavm needs %d",
                                 version, KVM_API_VERSION);
    static const struct {
        int capability;
        const char *name;
    } needed[] = {
        {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
        {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
        {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
        {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
        {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
        {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
    };
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        int ret = require_capability(vm, needed[i].capability, needed[i].name, error_message);
        if (ret < 0)
            return ret;
    }
    vm->vcpu_mmap_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (vm->vcpu_mmap_size <= 0)
        return error_message_set(error_message, -errno, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
    vm->max_vcpus = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
    if (vm->max_vcpus <= 0)
        vm->max_vcpus = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
    if (vm->max_vcpus <= 0)
        vm->max_vcpus = 4; /* what the KVM API documents when neither is reported */
    int ret = fetch_supported_cpuid(vm);
    if (ret < 0)
        return error_message_set(error_message, ret, "KVM_GET_SUPPORTED_CPUID: %s", strerror(-ret));

    vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    if (vm->vm_fd < 0)
        return error_message_set(error_message, -errno, "KVM_CREATE_VM: %s", strerror(errno));
    /* Intel needs both areas for real-mode emulation; AMD accepts and ignores them. */
    if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)LAYOUT_TSS_ADDRESS) < 0)
        return error_message_set(error_message, -errno, "KVM_SET_TSS_ADDR: %s", strerror(errno));
    uint64_t identity_map = LAYOUT_IDENTITY_MAP_ADDRESS;
    if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &identity_map) < 0)
        return error_message_set(error_message, -errno, "KVM_SET_IDENTITY_MAP_ADDR: %s", strerror(errno));
    if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
        return error_message_set(error_message, -errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
    /* KVM_PIT_SPEAKER_DUMMY: port 0x61 answered in the kernel, no exits for the speaker. */
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
        return error_message_set(error_message, -errno, "KVM_CREATE_PIT2: %s", strerror(errno));
    return 0;
}

void kvm_vm_close(struct kvm_vm *vm)
{
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    free(vm->supported_cpuid);
    memset(vm, 0, sizeof(*vm));
    vm->vm_fd = vm->kvm_fd = -1;
}

int kvm_vm_add_memory(struct kvm_vm *vm, const struct guest_memory *memory, char **error_message)
{
    for (unsigned i = 0; i < memory->count; i++) {
        const struct guest_memory_region *region = &memory->regions[i];
        struct kvm_userspace_memory_region slot = {
            .slot = i,
            .guest_phys_addr = region->guest_address,
            .memory_size = region->size,
            .userspace_addr = (uint64_t)(uintptr_t)region->host,
        };
        if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
            return error_message_set(error_message, -errno, "KVM_SET_USER_MEMORY_REGION (%llu MiB at 0x%llx): %s",
                                     (unsigned long long)(region->size >> 20),
                                     (unsigned long long)region->guest_address, strerror(errno));
    }
    return 0;
}

int kvm_vm_set_irq_line(struct kvm_vm *vm, unsigned irq, bool level)
{
    struct kvm_irq_level line = {.irq = irq, .level = level ? 1 : 0};
    return ioctl(vm->vm_fd, KVM_IRQ_LINE, &line) < 0 ? -errno : 0;
}

int kvm_vm_pulse_irq(struct kvm_vm *vm, unsigned irq)
{
    int ret = kvm_vm_set_irq_line(vm, irq, true);
    if (ret < 0)
        return ret;
    return kvm_vm_set_irq_line(vm, irq, false);
}

int kvm_vm_add_ioeventfd(struct kvm_vm *vm, uint64_t address, unsigned length, bool pio, int fd)
{
    struct kvm_ioeventfd event = {
        .addr = address,
        .len = length,
        .fd = fd,
        .flags = pio ? KVM_IOEVENTFD_FLAG_PIO : 0,
    };
    return ioctl(vm->vm_fd, KVM_IOEVENTFD, &event) < 0 ? -errno : 0;
}
