/* lunavm's command line and kernel command line. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/machine.h"
#include "vmm/vm_options.h"

static int parse(struct vm_options *options, char **message, int argc, char **argv)
{
    *message = NULL;
    return vm_options_parse(argc, argv, options, message);
}

#define PARSE(options, message, ...)                                                   \
    parse(options, message, (int)(sizeof((char *[]){"lunavm", __VA_ARGS__}) / sizeof(char *)), \
          (char *[]){"lunavm", __VA_ARGS__})

Test(vmm_options, memory_sizes)
{
    uint64_t bytes;
    cr_assert_eq(vm_parse_memory_size("512", &bytes), 0);
    cr_assert_eq(bytes, 512ull << 20);
    cr_assert_eq(vm_parse_memory_size("2G", &bytes), 0);
    cr_assert_eq(bytes, 2ull << 30);
    cr_assert_eq(vm_parse_memory_size("size=1536M", &bytes), 0);
    cr_assert_eq(bytes, 1536ull << 20);
    cr_assert_eq(vm_parse_memory_size("65536k", &bytes), 0);
    cr_assert_eq(bytes, 64ull << 20);
    cr_assert_eq(vm_parse_memory_size("12Q", &bytes), -EINVAL);
    cr_assert_eq(vm_parse_memory_size("", &bytes), -EINVAL);
    cr_assert_eq(vm_parse_memory_size("-1G", &bytes), -EINVAL);
    cr_assert_eq(vm_parse_memory_size("99999999999T", &bytes), -EINVAL);
}

Test(vmm_options, a_full_command_line)
{
    struct vm_options options;
    char *message;
    cr_assert_eq(PARSE(&options, &message, "-m", "1G", "--smp", "4", "-kernel", "bz", "-initrd", "rd", "-append",
                       "quiet", "-nographic", "-serial", "stdio", "-name", "guest=vm1", "-enable-kvm", "-drive",
                       "file=nbd://host/disk,,x,if=virtio,format=raw,cache=none,readonly=on,id=d0,serial=S1"),
                 0, "%s", message ? message : "");
    cr_assert_eq(options.memory_size, 1ull << 30);
    cr_assert_eq(options.cpus, 4);
    cr_assert_str_eq(options.kernel, "bz");
    cr_assert_str_eq(options.initrd, "rd");
    cr_assert_str_eq(options.append, "quiet");
    cr_assert_str_eq(options.name, "vm1");
    cr_assert_eq(options.drive_count, 1);
    cr_assert_str_eq(options.drives[0].file, "nbd://host/disk,x", ",, is a comma");
    cr_assert_eq(options.drives[0].format, BDEV_FORMAT_RAW);
    cr_assert_eq(options.drives[0].cache, BDEV_CACHE_NONE);
    cr_assert(options.drives[0].readonly);
    cr_assert_str_eq(options.drives[0].id, "d0");
    cr_assert_str_eq(options.drives[0].serial, "S1");
    cr_assert(!options.drives[0].snapshot);
    cr_assert_null(options.pidfile);
    vm_options_clear(&options);
    cr_assert_eq(PARSE(&options, &message, "-kernel", "bz", "-pidfile", "/run/vm1.pid", "-serial", "mon:stdio",
                       "-monitor", "stdio", "-drive", "file=d.raw,snapshot=on"),
                 0, "%s", message ? message : "");
    cr_assert_str_eq(options.pidfile, "/run/vm1.pid");
    cr_assert_str_eq(options.monitor, "stdio");
    cr_assert(options.drives[0].snapshot);
    cr_assert(!options.rng && !options.daemonize);
    vm_options_clear(&options);
    cr_assert_eq(PARSE(&options, &message, "-kernel", "bz", "-device", "virtio-rng-device", "-daemonize", "-monitor",
                       "unix:/run/vm1.sock,server,nowait"),
                 0, "%s", message ? message : "");
    cr_assert(options.rng);
    cr_assert(options.daemonize);
    cr_assert(!options.no_reboot, "a reset boots the guest again unless -no-reboot");
    vm_options_clear(&options);
    cr_assert_eq(PARSE(&options, &message, "-kernel", "bz", "-no-reboot"), 0, "%s", message ? message : "");
    cr_assert(options.no_reboot);
    vm_options_clear(&options);
    cr_assert_eq(PARSE(&options, &message, "-kernel", "bz", "-drive", "file=nbd://h/a,reconnect-timeout=300", "-drive",
                       "file=nbd://h/b,file.reconnect-delay=5", "-drive", "file=nbd://h/c"),
                 0, "%s", message ? message : "");
    cr_assert_eq(options.drives[0].reconnect_timeout, 300);
    cr_assert_eq(options.drives[1].reconnect_timeout, 5, "QEMU's spelling");
    cr_assert_eq(options.drives[2].reconnect_timeout, 0, "the block layer's default");
    vm_options_clear(&options);
}

static void expect_error(const char *needle, struct vm_options *options, char *message, int ret)
{
    cr_assert_eq(ret, -EINVAL);
    cr_assert_not_null(message);
    cr_assert(strstr(message, needle), "'%s' lacks '%s'", message, needle);
    free(message);
    vm_options_clear(options);
}

Test(vmm_options, errors_name_the_option)
{
    struct vm_options options;
    char *message;
    int ret = PARSE(&options, &message, "-kernel", "bz", "-vga", "std");
    expect_error("-vga", &options, message, ret);
    ret = PARSE(&options, &message, "-kernel", "bz", "-serial", "pty");
    expect_error("-serial pty", &options, message, ret);
    ret = PARSE(&options, &message, "-kernel", "bz", "-drive", "file=x,if=ide");
    expect_error("if=ide", &options, message, ret);
    ret = PARSE(&options, &message, "-kernel", "bz", "-device", "virtio-rng-pci");
    expect_error("-device virtio-rng-pci", &options, message, ret);
    ret = PARSE(&options, &message, "-kernel", "bz", "-daemonize", "-nographic");
    expect_error("-daemonize", &options, message, ret);
    ret = PARSE(&options, &message, "-kernel", "bz", "-monitor", "stdio", "-daemonize");
    expect_error("-monitor stdio", &options, message, ret);
    ret = PARSE(&options, &message, "-kernel", "bz", "-drive", "file=x,snapshot=maybe");
    expect_error("snapshot=maybe", &options, message, ret);
    ret = PARSE(&options, &message, "-kernel", "bz", "-drive", "file=x,reconnect-timeout=0");
    expect_error("reconnect-timeout=0", &options, message, ret);
    ret = PARSE(&options, &message, "-kernel", "bz", "-drive", "file=x,reconnect-timeout=10s");
    expect_error("1 to 86400 seconds", &options, message, ret);
    ret = PARSE(&options, &message, "-kernel", "bz", "-drive", "if=virtio");
    expect_error("no file=", &options, message, ret);
    ret = PARSE(&options, &message, "-kernel", "bz", "-smp", "0");
    expect_error("-smp 0", &options, message, ret);
    ret = PARSE(&options, &message, "-kernel", "bz", "-m", "1M");
    expect_error("-m 1M", &options, message, ret);
    ret = PARSE(&options, &message, "-kernel");
    expect_error("requires an argument", &options, message, ret);
    ret = PARSE(&options, &message, "-m", "1G");
    expect_error("-kernel", &options, message, ret);
}

Test(vmm_options, help_needs_no_kernel)
{
    struct vm_options options;
    char *message;
    cr_assert_eq(PARSE(&options, &message, "--help"), 0);
    cr_assert(options.help);
    vm_options_clear(&options);
}

Test(vmm_options, kernel_command_line)
{
    char *cmdline = machine_build_cmdline("root=/dev/vda", 2);
    cr_assert_str_eq(cmdline, "root=/dev/vda console=ttyS0 virtio_mmio.device=512@0xd0000000:5 "
                              "virtio_mmio.device=512@0xd0001000:6");
    free(cmdline);
    cmdline = machine_build_cmdline("console=hvc0", 0);
    cr_assert_str_eq(cmdline, "console=hvc0");
    free(cmdline);
    cmdline = machine_build_cmdline(NULL, 0);
    cr_assert_str_eq(cmdline, "console=ttyS0");
    free(cmdline);
    cr_assert_eq(machine_virtio_irq(2), 7);
    cr_assert_eq(machine_virtio_irq(3), 10, "IRQ 8 is the RTC's, 9 the ACPI SCI's");
    cr_assert_eq(machine_virtio_irq(VM_MAX_DRIVES - 1), 22, "within the I/O APIC's 24 pins");
}
