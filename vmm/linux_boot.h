/*
 * linux_boot: the x86 Linux boot protocol (Documentation/arch/x86/boot.rst)
 * as pure functions over byte buffers.
 *
 * Parses a bzImage's setup header, decides where the command line and the
 * initrd go, lays out the e820 map and fills the zero page (struct
 * boot_params) that the kernel's 64-bit entry point finds in RSI.  Nothing
 * here touches KVM or files, so the unit tests run it on synthetic images.
 */
#ifndef LUNA_VMM_LINUX_BOOT_H
#define LUNA_VMM_LINUX_BOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Zero-page offsets (arch/x86/include/uapi/asm/bootparam.h). */
#define BOOT_PARAMS_SIZE 4096u
#define BOOT_ACPI_RSDP_ADDR 0x070u
#define BOOT_EXT_RAMDISK_IMAGE 0x0c0u
#define BOOT_EXT_RAMDISK_SIZE 0x0c4u
#define BOOT_EXT_CMD_LINE_PTR 0x0c8u
#define BOOT_E820_ENTRIES 0x1e8u
#define BOOT_SETUP_SECTS 0x1f1u
#define BOOT_VID_MODE 0x1fau
#define BOOT_BOOT_FLAG 0x1feu
#define BOOT_JUMP 0x200u
#define BOOT_HEADER 0x202u
#define BOOT_VERSION 0x206u
#define BOOT_TYPE_OF_LOADER 0x210u
#define BOOT_LOADFLAGS 0x211u
#define BOOT_CODE32_START 0x214u
#define BOOT_RAMDISK_IMAGE 0x218u
#define BOOT_RAMDISK_SIZE 0x21cu
#define BOOT_HEAP_END_PTR 0x224u
#define BOOT_CMD_LINE_PTR 0x228u
#define BOOT_INITRD_ADDR_MAX 0x22cu
#define BOOT_KERNEL_ALIGNMENT 0x230u
#define BOOT_RELOCATABLE_KERNEL 0x234u
#define BOOT_XLOADFLAGS 0x236u
#define BOOT_CMDLINE_SIZE 0x238u
#define BOOT_PREF_ADDRESS 0x258u
#define BOOT_INIT_SIZE 0x260u
#define BOOT_E820_TABLE 0x2d0u
#define BOOT_E820_MAX_ENTRIES 128u
#define BOOT_E820_ENTRY_SIZE 20u

#define BOOT_HEADER_MAGIC 0x53726448u /* "HdrS" */
#define BOOT_FLAG_MAGIC 0xaa55u
#define BOOT_LOADFLAG_LOADED_HIGH 0x01u
#define BOOT_LOADFLAG_CAN_USE_HEAP 0x80u
#define BOOT_XLF_KERNEL_64 0x01u
#define BOOT_MIN_VERSION 0x0206u
#define BOOT_XLOADFLAGS_VERSION 0x020cu /* xloadflags exist from 2.12 */

struct linux_setup_info {
    uint16_t version;
    uint8_t loadflags;
    uint16_t xloadflags;
    size_t setup_size;        /* (setup_sects + 1) * 512: the protected-mode kernel starts here */
    size_t header_end;        /* end of the setup header in the image (0x202 + byte at 0x201) */
    uint32_t initrd_addr_max;
    uint32_t cmdline_size;    /* longest command line, without its NUL */
    uint32_t init_size;       /* memory the kernel needs from where it runs */
    uint64_t pref_address;    /* where a relocatable kernel decompresses to */
};

/*
 * Check a bzImage (the whole file) and extract what loading needs.
 * -ENOEXEC with a message for anything lunavm cannot boot.
 */
int linux_setup_parse(const uint8_t *image, size_t size, struct linux_setup_info *info, char **error_message);

/*
 * An uncompressed vmlinux carries no setup header: write the one a bzImage
 * of protocol 2.15 would give (64-bit entry, loaded high, 2047-byte command
 * line, initrds below 2 GiB) into header (BOOT_PARAMS_SIZE bytes, the
 * layout linux_zero_page_build copies from) and describe it in info.
 */
void linux_setup_for_vmlinux(uint8_t *header, struct linux_setup_info *info);

struct e820_entry {
    uint64_t address;
    uint64_t size;
    uint32_t type;
};

#define E820_TYPE_RAM 1u
#define E820_TYPE_RESERVED 2u
#define E820_LAYOUT_MAX 6u

/* The map for ram_size bytes of RAM laid out as guest_memory_allocate does.  Returns the count. */
unsigned e820_layout(uint64_t ram_size, struct e820_entry entries[E820_LAYOUT_MAX]);

/*
 * First address past what the kernel may use while it decompresses and
 * starts: initrds must go above it.
 */
uint64_t linux_kernel_end(const struct linux_setup_info *info, size_t kernel_size);

/*
 * Where an initrd of size bytes goes: page-aligned, as high as
 * initrd_addr_max and the low RAM allow, above kernel_end.  0 or -ENOMEM.
 */
int linux_initrd_place(const struct linux_setup_info *info, uint64_t low_ram_end, uint64_t kernel_end,
                       uint64_t size, uint64_t *address);

struct linux_boot_layout {
    uint64_t cmdline_address;
    uint64_t initrd_address;  /* 0 with initrd_size 0: no initrd */
    uint64_t initrd_size;
    const struct e820_entry *e820;
    unsigned e820_count;
    uint64_t acpi_rsdp_address; /* 0: none (the kernel may still scan for one) */
};

/* Fill zero_page (BOOT_PARAMS_SIZE bytes): the image's setup header, then what the loader sets. */
void linux_zero_page_build(uint8_t *zero_page, const uint8_t *image, const struct linux_setup_info *info,
                           const struct linux_boot_layout *layout);

#endif
