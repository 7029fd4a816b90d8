/*
 * elf_kernel: an uncompressed x86-64 Linux kernel (vmlinux, ELF) as pure
 * functions over its bytes.  Booting it skips the bzImage's
 * self-decompression, as Firecracker and QEMU's PVH boot do: its loadable
 * segments go to their physical addresses and the vCPU starts at the ELF
 * entry (startup_64, Linux's 64-bit entry) in long mode, with the zero
 * page in RSI as for a bzImage.  Nothing here touches KVM or files.
 */
#ifndef LUNA_VMM_ELF_KERNEL_H
#define LUNA_VMM_ELF_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ELF_KERNEL_MAX_SEGMENTS 16u

struct elf_kernel_segment {
    uint64_t file_offset;
    uint64_t file_size;
    uint64_t address; /* physical (p_paddr) */
    uint64_t memory_size; /* >= file_size: the rest is zeroed (.bss) */
};

struct elf_kernel {
    uint64_t entry;
    struct elf_kernel_segment segments[ELF_KERNEL_MAX_SEGMENTS];
    unsigned segment_count;
    uint64_t start; /* lowest segment address */
    uint64_t end;   /* one past the highest segment byte */
};

/* Whether image starts as an ELF file does (then it is loaded as one, or refused). */
bool elf_kernel_is_elf(const uint8_t *image, size_t size);

/*
 * Check an x86-64 executable ELF kernel and list its loadable segments,
 * from head, the file's first head_size bytes, which must hold the ELF and
 * program headers: every segment inside the file (file_size bytes) and
 * inside [lowest, highest), no overlap between segments, the entry inside
 * a segment's file bytes.  -ENOEXEC with a message for anything else.
 */
int elf_kernel_parse(const uint8_t *head, size_t head_size, uint64_t file_size, uint64_t lowest, uint64_t highest,
                     struct elf_kernel *kernel, char **error_message);

#endif
