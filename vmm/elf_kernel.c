#include "vmm/elf_kernel.h"

#include <elf.h>
#include <errno.h>
#include <string.h>

#include "common/error_message.h"

bool elf_kernel_is_elf(const uint8_t *image, size_t size)
{
    return size >= SELFMAG && memcmp(image, ELFMAG, SELFMAG) == 0;
}

static int check_header(const uint8_t *head, size_t head_size, Elf64_Ehdr *header, char **error_message)
{
    if (head_size < sizeof(*header))
        return error_message_set(error_message, -ENOEXEC, "ELF file too short for its header");
    memcpy(header, head, sizeof(*header));
    if (header->e_ident[EI_CLASS] != ELFCLASS64 || header->e_ident[EI_DATA] != ELFDATA2LSB)
        return error_message_set(error_message, -ENOEXEC, "not a 64-bit little-endian ELF file");
    if (header->e_machine != EM_X86_64)
        return error_message_set(error_message, -ENOEXEC, "ELF file for machine %u, not x86-64", header->e_machine);
    if (header->e_type != ET_EXEC)
        return error_message_set(error_message, -ENOEXEC, "ELF file is not an executable (type %u)", header->e_type);
    if (header->e_phentsize != sizeof(Elf64_Phdr) || header->e_phnum == 0)
        return error_message_set(error_message, -ENOEXEC, "ELF file has no usable program headers");
    if (header->e_phoff > head_size || (uint64_t)header->e_phnum * sizeof(Elf64_Phdr) > head_size - header->e_phoff)
        return error_message_set(error_message, -ENOEXEC, "ELF program headers lie beyond the first %zu bytes",
                                 head_size);
    return 0;
}

static int add_segment(const Elf64_Phdr *program, uint64_t file_size, uint64_t lowest, uint64_t highest,
                       struct elf_kernel *kernel, char **error_message)
{
    if (program->p_filesz > program->p_memsz)
        return error_message_set(error_message, -ENOEXEC, "ELF segment holds more file bytes than memory");
    if (program->p_offset > file_size || program->p_filesz > file_size - program->p_offset)
        return error_message_set(error_message, -ENOEXEC, "ELF segment lies beyond the end of the file");
    if (program->p_paddr < lowest || program->p_paddr > highest || program->p_memsz > highest - program->p_paddr)
        return error_message_set(error_message, -ENOEXEC,
                                 "ELF segment at 0x%llx (%llu bytes) lies outside guest RAM from 0x%llx to 0x%llx",
                                 (unsigned long long)program->p_paddr, (unsigned long long)program->p_memsz,
                                 (unsigned long long)lowest, (unsigned long long)highest);
    if (kernel->segment_count == ELF_KERNEL_MAX_SEGMENTS)
        return error_message_set(error_message, -ENOEXEC, "more than %u loadable ELF segments",
                                 ELF_KERNEL_MAX_SEGMENTS);
    uint64_t start = program->p_paddr, end = program->p_paddr + program->p_memsz;
    for (unsigned i = 0; i < kernel->segment_count; i++) {
        const struct elf_kernel_segment *other = &kernel->segments[i];
        if (start < other->address + other->memory_size && other->address < end)
            return error_message_set(error_message, -ENOEXEC, "ELF segments overlap at 0x%llx",
                                     (unsigned long long)start);
    }
    kernel->segments[kernel->segment_count++] = (struct elf_kernel_segment){
        .file_offset = program->p_offset,
        .file_size = program->p_filesz,
        .address = start,
        .memory_size = program->p_memsz,
    };
    if (kernel->segment_count == 1 || start < kernel->start)
        kernel->start = start;
    if (end > kernel->end)
        kernel->end = end;
    return 0;
}

int elf_kernel_parse(const uint8_t *head, size_t head_size, uint64_t file_size, uint64_t lowest, uint64_t highest,
                     struct elf_kernel *kernel, char **error_message)
{
    memset(kernel, 0, sizeof(*kernel));
    Elf64_Ehdr header;
    int ret = check_header(head, head_size, &header, error_message);
    if (ret < 0)
        return ret;
    for (unsigned i = 0; i < header.e_phnum; i++) {
        Elf64_Phdr program;
        memcpy(&program, head + header.e_phoff + (size_t)i * sizeof(program), sizeof(program));
        if (program.p_type != PT_LOAD || program.p_memsz == 0)
            continue;
        if ((ret = add_segment(&program, file_size, lowest, highest, kernel, error_message)) < 0)
            return ret;
    }
    if (kernel->segment_count == 0)
        return error_message_set(error_message, -ENOEXEC, "ELF file has no loadable segment");
    /* The entry must be code this loader put in place: Linux's is phys_startup_64. */
    bool inside = false;
    for (unsigned i = 0; i < kernel->segment_count; i++) {
        const struct elf_kernel_segment *segment = &kernel->segments[i];
        if (header.e_entry >= segment->address && header.e_entry - segment->address < segment->file_size)
            inside = true;
    }
    if (!inside)
        return error_message_set(error_message, -ENOEXEC, "ELF entry point 0x%llx is not in a loaded segment",
                                 (unsigned long long)header.e_entry);
    kernel->entry = header.e_entry;
    return 0;
}
