/* Uncompressed vmlinux (ELF) kernels: the parser's checks, and kernel_load placing one. */
#include <criterion/criterion.h>
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/byte_order.h"
#include "vmm/elf_kernel.h"
#include "vmm/guest_memory.h"
#include "vmm/kernel_loader.h"
#include "vmm/linux_boot.h"
#include "vmm/memory_layout.h"

#define FILE_SIZE 0x3000u
#define LOWEST 0x100000u
#define HIGHEST 0x4000000u /* 64 MiB of low RAM */

/*
 * A vmlinux in miniature, laid out as Linux's: text at 16 MiB (the entry
 * at its start), data with a .bss tail after it, and a note segment.
 */
static void make_elf(uint8_t image[FILE_SIZE])
{
    memset(image, 0, FILE_SIZE);
    Elf64_Ehdr header = {
        .e_type = ET_EXEC,
        .e_machine = EM_X86_64,
        .e_version = EV_CURRENT,
        .e_entry = 0x1000000,
        .e_phoff = sizeof(Elf64_Ehdr),
        .e_ehsize = sizeof(Elf64_Ehdr),
        .e_phentsize = sizeof(Elf64_Phdr),
        .e_phnum = 3,
    };
    memcpy(header.e_ident, ELFMAG, SELFMAG);
    header.e_ident[EI_CLASS] = ELFCLASS64;
    header.e_ident[EI_DATA] = ELFDATA2LSB;
    header.e_ident[EI_VERSION] = EV_CURRENT;
    memcpy(image, &header, sizeof(header));
    Elf64_Phdr programs[3] = {
        {.p_type = PT_LOAD, .p_offset = 0x1000, .p_vaddr = 0xffffffff81000000, .p_paddr = 0x1000000,
         .p_filesz = 0x1000, .p_memsz = 0x1000},
        {.p_type = PT_LOAD, .p_offset = 0x2000, .p_vaddr = 0xffffffff81200000, .p_paddr = 0x1200000,
         .p_filesz = 0x800, .p_memsz = 0x3000},
        {.p_type = PT_NOTE, .p_offset = 0x1800, .p_paddr = 0x1000800, .p_filesz = 0x20, .p_memsz = 0x20},
    };
    memcpy(image + sizeof(header), programs, sizeof(programs));
    memset(image + 0x1000, 0x90, 0x1000); /* "text" */
    memset(image + 0x2000, 0xda, 0x800);  /* "data" */
}

static Elf64_Phdr *program(uint8_t *image, unsigned index)
{
    return (Elf64_Phdr *)(image + sizeof(Elf64_Ehdr) + index * sizeof(Elf64_Phdr));
}

Test(vmm_elf_kernel, lists_loadable_segments_and_the_entry)
{
    uint8_t image[FILE_SIZE];
    make_elf(image);
    cr_assert(elf_kernel_is_elf(image, sizeof(image)));
    struct elf_kernel kernel;
    cr_assert_eq(elf_kernel_parse(image, sizeof(image), FILE_SIZE, LOWEST, HIGHEST, &kernel, NULL), 0);
    cr_assert_eq(kernel.entry, 0x1000000);
    cr_assert_eq(kernel.segment_count, 2, "the note segment is not loaded");
    cr_assert_eq(kernel.segments[1].address, 0x1200000);
    cr_assert_eq(kernel.segments[1].file_size, 0x800);
    cr_assert_eq(kernel.segments[1].memory_size, 0x3000);
    cr_assert_eq(kernel.start, 0x1000000);
    cr_assert_eq(kernel.end, 0x1203000);
    uint8_t bzimage[FILE_SIZE] = {0};
    cr_assert_not(elf_kernel_is_elf(bzimage, sizeof(bzimage)));
}

/* Each way a file can be wrong, with the words its message must hold. */
Test(vmm_elf_kernel, refuses_what_it_cannot_load_safely)
{
    struct {
        size_t head_size;
        uint64_t file_size;
    } expect;
    uint8_t image[FILE_SIZE];
    struct elf_kernel kernel;
    char *message = NULL;

#define REFUSED(words)                                                                                          \
    do {                                                                                                        \
        message = NULL;                                                                                         \
        cr_assert_eq(elf_kernel_parse(image, expect.head_size, expect.file_size, LOWEST, HIGHEST, &kernel,       \
                                      &message),                                                                \
                     -ENOEXEC, "%s", words);                                                                    \
        cr_assert(message && strstr(message, words), "'%s' should say '%s'", message ? message : "(none)", words); \
        free(message);                                                                                          \
        make_elf(image);                                                                                        \
    } while (0)

    expect.head_size = sizeof(image);
    expect.file_size = FILE_SIZE;
    make_elf(image);
    image[EI_CLASS] = ELFCLASS32;
    REFUSED("64-bit");
    ((Elf64_Ehdr *)image)->e_machine = EM_386;
    REFUSED("not x86-64");
    ((Elf64_Ehdr *)image)->e_type = ET_DYN;
    REFUSED("not an executable");
    expect.head_size = 100; /* the program headers are cut off */
    REFUSED("program headers");
    expect.head_size = sizeof(image);
    expect.file_size = 0x2400; /* the data segment's bytes are not all there */
    REFUSED("beyond the end of the file");
    expect.file_size = FILE_SIZE;
    program(image, 1)->p_filesz = 0x4000;
    REFUSED("more file bytes than memory");
    program(image, 0)->p_paddr = 0x7000; /* over the zero page */
    REFUSED("outside guest RAM");
    program(image, 1)->p_memsz = HIGHEST; /* runs past the end of RAM */
    REFUSED("outside guest RAM");
    program(image, 1)->p_paddr = 0x1000800;
    REFUSED("overlap");
    ((Elf64_Ehdr *)image)->e_entry = 0x1200900; /* in .bss: nothing loaded there */
    REFUSED("entry point");
    program(image, 0)->p_type = PT_NULL;
    program(image, 1)->p_type = PT_NULL;
    REFUSED("no loadable segment");
#undef REFUSED
}

/* The image into a new file named after template (mkstemp's XXXXXX replaced). */
static void write_kernel_file(char *template, const uint8_t image[FILE_SIZE])
{
    int fd = mkstemp(template);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, image, FILE_SIZE), (ssize_t)FILE_SIZE);
    close(fd);
}

Test(vmm_elf_kernel, kernel_load_places_segments_zero_page_and_entry)
{
    uint8_t image[FILE_SIZE];
    make_elf(image);
    char path[] = "/tmp/luna-vmlinux-XXXXXX";
    write_kernel_file(path, image);

    struct guest_memory memory;
    cr_assert_eq(guest_memory_allocate(&memory, HIGHEST), 0);
    uint8_t *stale = guest_memory_translate(&memory, 0x1200800, 0x2800);
    memset(stale, 0x55, 0x2800); /* .bss must be zeroed, whatever RAM held */
    struct acpi_layout acpi = {.cpus = 1};
    struct kernel_boot boot = {.kernel_path = path, .cmdline = "console=ttyS0 quiet", .cpus = 1, .acpi = &acpi};
    uint64_t entry = 0;
    char *message = NULL;
    cr_assert_eq(kernel_load(&boot, &memory, &entry, &message), 0, "%s", message ? message : "");
    unlink(path);

    cr_assert_eq(entry, 0x1000000, "the ELF entry (startup_64), not a bzImage's offset 0x200");
    const uint8_t *text = guest_memory_translate(&memory, 0x1000000, 0x1000);
    const uint8_t *data = guest_memory_translate(&memory, 0x1200000, 0x3000);
    for (unsigned i = 0; i < 0x1000; i++)
        cr_assert_eq(text[i], 0x90);
    for (unsigned i = 0; i < 0x3000; i++)
        cr_assert_eq(data[i], i < 0x800 ? 0xda : 0, "byte %u of the data segment", i);
    const uint8_t *zero_page = guest_memory_translate(&memory, LAYOUT_ZERO_PAGE_ADDRESS, BOOT_PARAMS_SIZE);
    cr_assert_eq(load_le32(zero_page + BOOT_HEADER), BOOT_HEADER_MAGIC);
    cr_assert_eq(load_le16(zero_page + BOOT_BOOT_FLAG), BOOT_FLAG_MAGIC);
    cr_assert_eq(zero_page[BOOT_TYPE_OF_LOADER], 0xff);
    cr_assert(zero_page[BOOT_LOADFLAGS] & BOOT_LOADFLAG_LOADED_HIGH);
    cr_assert_eq(load_le32(zero_page + BOOT_CMD_LINE_PTR), LAYOUT_CMDLINE_ADDRESS);
    cr_assert_str_eq((const char *)guest_memory_translate(&memory, LAYOUT_CMDLINE_ADDRESS, 20), "console=ttyS0 quiet");
    cr_assert_eq(zero_page[BOOT_E820_ENTRIES], 3);
    cr_assert_eq(load_le64(zero_page + BOOT_ACPI_RSDP_ADDR), LAYOUT_ACPI_ADDRESS);
    guest_memory_free(&memory);
}

Test(vmm_elf_kernel, kernel_load_names_the_file_in_errors)
{
    uint8_t image[FILE_SIZE];
    make_elf(image);
    ((Elf64_Ehdr *)image)->e_machine = EM_AARCH64;
    char path[] = "/tmp/luna-vmlinux-XXXXXX";
    write_kernel_file(path, image);
    struct guest_memory memory;
    cr_assert_eq(guest_memory_allocate(&memory, HIGHEST), 0);
    struct acpi_layout acpi = {.cpus = 1};
    struct kernel_boot boot = {.kernel_path = path, .cmdline = "", .cpus = 1, .acpi = &acpi};
    uint64_t entry = 0;
    char *message = NULL;
    cr_assert_eq(kernel_load(&boot, &memory, &entry, &message), -ENOEXEC);
    unlink(path);
    cr_assert(message && strstr(message, path) && strstr(message, "not x86-64"), "%s", message ? message : "(none)");
    free(message);
    guest_memory_free(&memory);
}
