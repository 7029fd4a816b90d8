/* kvm_smoke: the smallest useful KVM program, run inside the nested-KVM test guest
 * (tests/vmm/nested_kvm.sh builds it with gcc -static -O2 and puts it in every outer
 * guest as /usr/bin/kvm_smoke).
 *
 *   kvm_smoke [N]
 *
 * Opens /dev/kvm, checks KVM_GET_API_VERSION == 12, creates a VM with one page of
 * memory at guest-physical 0x1000 holding real-mode code
 *     mov $0x3f8,%dx; mov $'A',%al; out %al,(%dx); hlt
 * creates a vCPU, and runs it until KVM_EXIT_IO (checked: port 0x3f8, out, 1 byte,
 * 'A') and then KVM_EXIT_HLT.  With N > 0 it then runs a second VM whose code does N
 * OUTs in a loop and reports the cost of one exit to user space.  Prints
 * "kvm_smoke: PASS" and exits 0, or "kvm_smoke: FAIL: why" and exits 1. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void fail(const char *fmt, ...)
{
    va_list ap;
    int saved = errno;
    va_start(ap, fmt);
    fputs("kvm_smoke: FAIL: ", stdout);
    vprintf(fmt, ap);
    va_end(ap);
    if (saved)
        printf(" (errno %d: %s)", saved, strerror(saved));
    putchar('\n');
    exit(1);
}

struct vm {
    int vm_fd, vcpu_fd;
    struct kvm_run *run;
    uint8_t *mem;
};

static void vm_create(int kvm, struct vm *vm, const uint8_t *code, size_t len)
{
    errno = 0;
    vm->vm_fd = ioctl(kvm, KVM_CREATE_VM, 0UL);
    if (vm->vm_fd < 0)
        fail("KVM_CREATE_VM");
    vm->mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (vm->mem == MAP_FAILED)
        fail("mmap guest memory");
    memcpy(vm->mem, code, len);
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0x1000, .memory_size = 0x1000,
        .userspace_addr = (uintptr_t)vm->mem,
    };
    if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        fail("KVM_SET_USER_MEMORY_REGION");
    vm->vcpu_fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, 0UL);
    if (vm->vcpu_fd < 0)
        fail("KVM_CREATE_VCPU");
    int mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, NULL);
    if (mmap_size < (int)sizeof(struct kvm_run))
        fail("KVM_GET_VCPU_MMAP_SIZE returned %d", mmap_size);
    vm->run = mmap(NULL, (size_t)mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu_fd, 0);
    if (vm->run == MAP_FAILED)
        fail("mmap kvm_run");

    struct kvm_sregs sregs;
    if (ioctl(vm->vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
        fail("KVM_GET_SREGS");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if (ioctl(vm->vcpu_fd, KVM_SET_SREGS, &sregs) < 0)
        fail("KVM_SET_SREGS");
    struct kvm_regs regs = { .rip = 0x1000, .rflags = 0x2 };
    if (ioctl(vm->vcpu_fd, KVM_SET_REGS, &regs) < 0)
        fail("KVM_SET_REGS");
}

static void vm_run(struct vm *vm)
{
    errno = 0;
    if (ioctl(vm->vcpu_fd, KVM_RUN, NULL) < 0)
        fail("KVM_RUN");
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long loops = argc > 1 ? strtol(argv[1], NULL, 0) : 0;
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        fail("open /dev/kvm");
    int api = ioctl(kvm, KVM_GET_API_VERSION, NULL);
    if (api != KVM_API_VERSION)
        fail("KVM_GET_API_VERSION returned %d, want %d", api, KVM_API_VERSION);
    printf("kvm_smoke: API version %d\n", api);
    if (ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) <= 0)
        fail("KVM_CAP_USER_MEMORY missing");

    static const uint8_t code[] = {
        0xba, 0xf8, 0x03, /* mov $0x3f8,%dx */
        0xb0, 'A',        /* mov $'A',%al */
        0xee,             /* out %al,(%dx) */
        0xf4,             /* hlt */
    };
    struct vm vm;
    vm_create(kvm, &vm, code, sizeof code);
    vm_run(&vm);
    struct kvm_run *r = vm.run;
    if (r->exit_reason != KVM_EXIT_IO)
        fail("first exit reason %u, want KVM_EXIT_IO (%u)", r->exit_reason, KVM_EXIT_IO);
    if (r->io.direction != KVM_EXIT_IO_OUT || r->io.port != 0x3f8 || r->io.size != 1 || r->io.count != 1)
        fail("unexpected I/O exit: dir %u port %#x size %u count %u",
             r->io.direction, r->io.port, r->io.size, r->io.count);
    char c = *((char *)r + r->io.data_offset);
    if (c != 'A')
        fail("guest wrote %#x, want 'A'", (unsigned char)c);
    printf("kvm_smoke: KVM_EXIT_IO out port 0x3f8 data '%c'\n", c);
    vm_run(&vm);
    if (r->exit_reason != KVM_EXIT_HLT)
        fail("second exit reason %u, want KVM_EXIT_HLT (%u)", r->exit_reason, KVM_EXIT_HLT);
    printf("kvm_smoke: KVM_EXIT_HLT\n");

    if (loops > 0) {
        /* mov $0x3f8,%dx; mov $N,%ecx; 1: out %al,(%dx); dec %ecx; jnz 1b; hlt */
        uint8_t loop_code[] = {
            0xba, 0xf8, 0x03,
            0x66, 0xb9, 0, 0, 0, 0,
            0xee,
            0x66, 0x49,
            0x75, 0xfb,
            0xf4,
        };
        uint32_t n = (uint32_t)loops;
        memcpy(&loop_code[5], &n, 4);
        struct vm lvm;
        vm_create(kvm, &lvm, loop_code, sizeof loop_code);
        long ios = 0;
        double t0 = now();
        for (;;) {
            vm_run(&lvm);
            if (lvm.run->exit_reason == KVM_EXIT_HLT)
                break;
            if (lvm.run->exit_reason != KVM_EXIT_IO)
                fail("loop: exit reason %u", lvm.run->exit_reason);
            ios++;
        }
        double t = now() - t0;
        if (ios != loops)
            fail("loop: %ld I/O exits, want %ld", ios, loops);
        printf("kvm_smoke: %ld I/O exits in %.3f s: %.1f us per exit\n", ios, t, t * 1e6 / (double)ios);
    }
    printf("kvm_smoke: PASS\n");
    return 0;
}
