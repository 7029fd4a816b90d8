#include "vmm/kernel_loader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error_message.h"
#include "common/file_util.h"
#include "vmm/elf_kernel.h"
#include "vmm/linux_boot.h"
#include "vmm/long_mode.h"
#include "vmm/memory_layout.h"
#include "vmm/mptable.h"

#define KERNEL_64BIT_ENTRY_OFFSET 0x200u

/* Open path and return its size.  fd or -errno with a message. */
static int open_sized(const char *path, const char *what, uint64_t *size, char **error_message)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return error_message_set(error_message, -errno, "%s %s: %s", what, path, strerror(errno));
    struct stat status;
    if (fstat(fd, &status) < 0) {
        int error = errno;
        close(fd);
        return error_message_set(error_message, -error, "%s %s: %s", what, path, strerror(error));
    }
    *size = (uint64_t)status.st_size;
    return fd;
}

/* The first length bytes of the kernel file, in a buffer of the caller's. */
static int read_kernel(int fd, const char *path, uint64_t length, uint8_t **image, char **error_message)
{
    if (length > (1u << 30))
        return error_message_set(error_message, -EFBIG, "kernel %s: larger than 1 GiB", path);
    uint8_t *buffer = malloc(length ? length : 1);
    if (!buffer)
        return error_message_set(error_message, -ENOMEM, "kernel %s: out of memory", path);
    int ret = file_pread_full(fd, buffer, length, 0);
    if (ret < 0) {
        free(buffer);
        return error_message_set(error_message, ret, "kernel %s: %s", path, strerror(-ret));
    }
    *image = buffer;
    return 0;
}

static int load_initrd(const char *path, const struct linux_setup_info *info, const struct guest_memory *memory,
                       uint64_t kernel_end, uint64_t *address, uint64_t *size, char **error_message)
{
    int fd = open_sized(path, "initrd", size, error_message);
    if (fd < 0)
        return fd;
    uint64_t low_end = guest_memory_low_end(memory);
    int ret = linux_initrd_place(info, low_end, kernel_end, *size, address);
    if (ret < 0) {
        close(fd);
        return error_message_set(error_message, ret,
                                 "initrd %s (%llu MiB) does not fit below %llu MiB with the kernel: raise -m", path,
                                 (unsigned long long)(*size >> 20), (unsigned long long)(low_end >> 20));
    }
    uint8_t *target = guest_memory_translate(memory, *address, *size);
    ret = target ? file_pread_full(fd, target, *size, 0) : -EFAULT;
    close(fd);
    if (ret < 0)
        return error_message_set(error_message, ret, "initrd %s: %s", path, strerror(-ret));
    return 0;
}

static int place_cmdline(const char *cmdline, const struct linux_setup_info *info, const struct guest_memory *memory,
                         char **error_message)
{
    size_t length = strlen(cmdline);
    uint32_t limit = info->cmdline_size ? info->cmdline_size : 255; /* 255: the pre-2.06 limit */
    if (length > limit || length >= LAYOUT_CMDLINE_MAX)
        return error_message_set(error_message, -E2BIG, "kernel command line is %zu bytes, the kernel takes %u",
                                 length, limit);
    char *target = guest_memory_translate(memory, LAYOUT_CMDLINE_ADDRESS, length + 1);
    if (!target)
        return error_message_set(error_message, -EFAULT, "no guest RAM for the command line");
    memcpy(target, cmdline, length + 1);
    return 0;
}

/* The initrd, the command line and the zero page, once the kernel is in place below kernel_end. */
static int place_boot_data(const struct kernel_boot *boot, const struct guest_memory *memory, const uint8_t *header,
                           const struct linux_setup_info *info, uint64_t kernel_end, char **error_message)
{
    struct linux_boot_layout layout = {.cmdline_address = LAYOUT_CMDLINE_ADDRESS,
                                       .acpi_rsdp_address = LAYOUT_ACPI_ADDRESS};
    int ret;
    if (boot->initrd_path) {
        ret = load_initrd(boot->initrd_path, info, memory, kernel_end, &layout.initrd_address, &layout.initrd_size,
                          error_message);
        if (ret < 0)
            return ret;
    }
    ret = place_cmdline(boot->cmdline, info, memory, error_message);
    if (ret < 0)
        return ret;
    struct e820_entry e820[E820_LAYOUT_MAX];
    layout.e820 = e820;
    layout.e820_count = e820_layout(memory->ram_size, e820);
    uint8_t *zero_page = guest_memory_translate(memory, LAYOUT_ZERO_PAGE_ADDRESS, BOOT_PARAMS_SIZE);
    if (!zero_page)
        return error_message_set(error_message, -EFAULT, "no guest RAM for the zero page");
    linux_zero_page_build(zero_page, header, info, &layout);
    return 0;
}

/* Prefix a parser's message with the kernel's name. */
static int kernel_error(const struct kernel_boot *boot, int ret, char **error_message)
{
    char *inner = error_message ? *error_message : NULL;
    if (error_message)
        *error_message = NULL;
    ret = error_message_set(error_message, ret, "kernel %s: %s", boot->kernel_path, inner ? inner : "invalid");
    free(inner);
    return ret;
}

static int load_bzimage(const struct kernel_boot *boot, const struct guest_memory *memory, const uint8_t *image,
                        size_t image_size, uint64_t *entry, char **error_message)
{
    struct linux_setup_info info;
    int ret = linux_setup_parse(image, image_size, &info, error_message);
    if (ret < 0)
        return kernel_error(boot, ret, error_message);
    size_t kernel_size = image_size - info.setup_size;
    uint64_t kernel_end = linux_kernel_end(&info, kernel_size);
    uint64_t low_end = guest_memory_low_end(memory);
    if (kernel_end > low_end)
        return error_message_set(error_message, -ENOMEM, "kernel %s needs %llu MiB of RAM to start: raise -m",
                                 boot->kernel_path, (unsigned long long)((kernel_end + (1u << 20) - 1) >> 20));
    uint8_t *target = guest_memory_translate(memory, LAYOUT_KERNEL_ADDRESS, kernel_size);
    if (!target)
        return error_message_set(error_message, -EFAULT, "no guest RAM for the kernel");
    memcpy(target, image + info.setup_size, kernel_size);
    *entry = LAYOUT_KERNEL_ADDRESS + KERNEL_64BIT_ENTRY_OFFSET;
    return place_boot_data(boot, memory, image, &info, kernel_end, error_message);
}

/*
 * An uncompressed vmlinux: its headers in head (the file's first bytes),
 * its segments read from the file straight to their physical addresses,
 * the entry at startup_64.
 */
static int load_vmlinux(const struct kernel_boot *boot, const struct guest_memory *memory, int fd,
                        const uint8_t *head, size_t head_size, uint64_t file_size, uint64_t *entry,
                        char **error_message)
{
    struct elf_kernel kernel;
    uint64_t low_end = guest_memory_low_end(memory);
    int ret = elf_kernel_parse(head, head_size, file_size, LAYOUT_KERNEL_ADDRESS, low_end, &kernel, error_message);
    if (ret < 0)
        return kernel_error(boot, ret, error_message);
    for (unsigned i = 0; i < kernel.segment_count; i++) {
        const struct elf_kernel_segment *segment = &kernel.segments[i];
        uint8_t *target = guest_memory_translate(memory, segment->address, segment->memory_size);
        if (!target)
            return error_message_set(error_message, -EFAULT, "no guest RAM for the kernel at 0x%llx",
                                     (unsigned long long)segment->address);
        ret = file_pread_full(fd, target, segment->file_size, (off_t)segment->file_offset);
        if (ret < 0)
            return error_message_set(error_message, ret, "kernel %s: %s", boot->kernel_path, strerror(-ret));
        memset(target + segment->file_size, 0, segment->memory_size - segment->file_size);
    }
    uint8_t header[BOOT_PARAMS_SIZE];
    struct linux_setup_info info;
    linux_setup_for_vmlinux(header, &info);
    *entry = kernel.entry;
    return place_boot_data(boot, memory, header, &info, kernel.end, error_message);
}

/* An ELF kernel's headers must lie in its first bytes: Linux's are at offset 64. */
#define KERNEL_HEAD_SIZE 65536u

static int load_kernel(const struct kernel_boot *boot, const struct guest_memory *memory, uint64_t *entry,
                       char **error_message)
{
    uint64_t size;
    int fd = open_sized(boot->kernel_path, "kernel", &size, error_message);
    if (fd < 0)
        return fd;
    uint8_t *image = NULL;
    uint64_t head_size = size < KERNEL_HEAD_SIZE ? size : KERNEL_HEAD_SIZE;
    int ret = read_kernel(fd, boot->kernel_path, head_size, &image, error_message);
    if (ret == 0 && elf_kernel_is_elf(image, head_size)) {
        ret = load_vmlinux(boot, memory, fd, image, head_size, size, entry, error_message);
    } else if (ret == 0) {
        free(image);
        image = NULL;
        ret = read_kernel(fd, boot->kernel_path, size, &image, error_message);
        if (ret == 0)
            ret = load_bzimage(boot, memory, image, size, entry, error_message);
    }
    free(image);
    close(fd);
    return ret;
}

int kernel_load(const struct kernel_boot *boot, const struct guest_memory *memory, uint64_t *entry,
                char **error_message)
{
    int ret = load_kernel(boot, memory, entry, error_message);
    if (ret < 0)
        return ret;

    uint8_t *acpi = guest_memory_translate(memory, LAYOUT_ACPI_ADDRESS, LAYOUT_ACPI_SIZE);
    long acpi_size = acpi ? acpi_tables_build(acpi, LAYOUT_ACPI_SIZE, LAYOUT_ACPI_ADDRESS, boot->acpi) : -EFAULT;
    if (acpi_size < 0)
        return error_message_set(error_message, (int)acpi_size, "cannot build the ACPI tables");
    size_t area = LAYOUT_BIOS_AREA_END - LAYOUT_MPTABLE_ADDRESS;
    uint8_t *mptable = guest_memory_translate(memory, LAYOUT_MPTABLE_ADDRESS, area);
    long written = mptable ? mptable_build(mptable, area, LAYOUT_MPTABLE_ADDRESS, boot->cpus) : -EFAULT;
    if (written < 0)
        return error_message_set(error_message, (int)written, "cannot build the MP table for %u CPUs", boot->cpus);
    ret = long_mode_write_tables(memory);
    if (ret < 0)
        return error_message_set(error_message, ret, "no guest RAM for the boot page tables");
    return 0;
}
