#include "vmm/linux_boot.h"

#include <errno.h>
#include <string.h>

#include "common/byte_order.h"
#include "common/error_message.h"
#include "vmm/memory_layout.h"

int linux_setup_parse(const uint8_t *image, size_t size, struct linux_setup_info *info, char **error_message)
{
    memset(info, 0, sizeof(*info));
    if (size < BOOT_INIT_SIZE + 4 || load_le16(image + BOOT_BOOT_FLAG) != BOOT_FLAG_MAGIC ||
        load_le32(image + BOOT_HEADER) != BOOT_HEADER_MAGIC)
        return error_message_set(error_message, -ENOEXEC, "not a bzImage (no 'HdrS' setup header)");
    info->version = load_le16(image + BOOT_VERSION);
    if (info->version < BOOT_MIN_VERSION)
        return error_message_set(error_message, -ENOEXEC, "boot protocol %u.%02u is too old (2.06 or later needed)",
                                 info->version >> 8, info->version & 0xff);
    info->loadflags = image[BOOT_LOADFLAGS];
    if (!(info->loadflags & BOOT_LOADFLAG_LOADED_HIGH))
        return error_message_set(error_message, -ENOEXEC, "a zImage (loaded low) cannot be booted, only bzImage");
    if (info->version >= BOOT_XLOADFLAGS_VERSION)
        info->xloadflags = load_le16(image + BOOT_XLOADFLAGS);
    /* lunavm enters in long mode; a kernel without the 64-bit entry would run 32-bit code there. */
    if (!(info->xloadflags & BOOT_XLF_KERNEL_64))
        return error_message_set(error_message, -ENOEXEC, "kernel has no 64-bit entry point (XLF_KERNEL_64)");
    unsigned setup_sects = image[BOOT_SETUP_SECTS];
    if (setup_sects == 0) /* the protocol's rule for ancient images */
        setup_sects = 4;
    info->setup_size = ((size_t)setup_sects + 1) * 512;
    info->header_end = BOOT_HEADER + image[BOOT_JUMP + 1];
    if (info->header_end > BOOT_PARAMS_SIZE || info->header_end > info->setup_size)
        return error_message_set(error_message, -ENOEXEC, "setup header overruns the setup code");
    if (info->setup_size >= size)
        return error_message_set(error_message, -ENOEXEC, "image ends inside its setup code (%zu bytes)", size);
    info->initrd_addr_max = load_le32(image + BOOT_INITRD_ADDR_MAX);
    info->cmdline_size = load_le32(image + BOOT_CMDLINE_SIZE);
    if (info->version >= 0x020a) {
        info->pref_address = load_le64(image + BOOT_PREF_ADDRESS);
        info->init_size = load_le32(image + BOOT_INIT_SIZE);
    }
    return 0;
}

void linux_setup_for_vmlinux(uint8_t *header, struct linux_setup_info *info)
{
    memset(header, 0, BOOT_PARAMS_SIZE);
    memset(info, 0, sizeof(*info));
    info->version = 0x020f;
    info->loadflags = BOOT_LOADFLAG_LOADED_HIGH;
    info->xloadflags = BOOT_XLF_KERNEL_64;
    info->header_end = BOOT_INIT_SIZE + 4;
    info->initrd_addr_max = 0x7fffffff;
    info->cmdline_size = 2047; /* COMMAND_LINE_SIZE - 1 on x86 */
    store_le16(header + BOOT_BOOT_FLAG, BOOT_FLAG_MAGIC);
    header[BOOT_JUMP + 1] = (uint8_t)(info->header_end - BOOT_HEADER);
    store_le32(header + BOOT_HEADER, BOOT_HEADER_MAGIC);
    store_le16(header + BOOT_VERSION, info->version);
    header[BOOT_LOADFLAGS] = info->loadflags;
    store_le32(header + BOOT_INITRD_ADDR_MAX, info->initrd_addr_max);
    store_le32(header + BOOT_KERNEL_ALIGNMENT, 0x200000);
    store_le16(header + BOOT_XLOADFLAGS, info->xloadflags);
    store_le32(header + BOOT_CMDLINE_SIZE, info->cmdline_size);
}

unsigned e820_layout(uint64_t ram_size, struct e820_entry entries[E820_LAYOUT_MAX])
{
    uint64_t low = ram_size < LAYOUT_LOW_RAM_LIMIT ? ram_size : LAYOUT_LOW_RAM_LIMIT;
    unsigned count = 0;
    entries[count++] = (struct e820_entry){0, LAYOUT_BASE_MEMORY_END, E820_TYPE_RAM};
    /* The MP table lives here; the kernel must not take it for free memory. */
    entries[count++] = (struct e820_entry){LAYOUT_BIOS_AREA_START, LAYOUT_BIOS_AREA_END - LAYOUT_BIOS_AREA_START,
                                           E820_TYPE_RESERVED};
    entries[count++] = (struct e820_entry){LAYOUT_KERNEL_ADDRESS, low - LAYOUT_KERNEL_ADDRESS, E820_TYPE_RAM};
    if (ram_size > low)
        entries[count++] = (struct e820_entry){LAYOUT_HIGH_RAM_START, ram_size - low, E820_TYPE_RAM};
    return count;
}

uint64_t linux_kernel_end(const struct linux_setup_info *info, size_t kernel_size)
{
    /*
     * A relocatable kernel loaded below pref_address moves there to
     * decompress (LOAD_PHYSICAL_ADDR), so it needs init_size from
     * whichever of the two is higher.
     */
    uint64_t start = info->pref_address > LAYOUT_KERNEL_ADDRESS ? info->pref_address : LAYOUT_KERNEL_ADDRESS;
    uint64_t need = info->init_size > kernel_size ? info->init_size : kernel_size;
    uint64_t end = start + need;
    uint64_t loaded_end = LAYOUT_KERNEL_ADDRESS + (uint64_t)kernel_size;
    return end > loaded_end ? end : loaded_end;
}

int linux_initrd_place(const struct linux_setup_info *info, uint64_t low_ram_end, uint64_t kernel_end,
                       uint64_t size, uint64_t *address)
{
    uint64_t limit = low_ram_end; /* one past the highest usable byte */
    if (info->initrd_addr_max && (uint64_t)info->initrd_addr_max + 1 < limit)
        limit = (uint64_t)info->initrd_addr_max + 1;
    if (size > limit)
        return -ENOMEM;
    uint64_t start = (limit - size) & ~(uint64_t)(GUEST_PAGE_SIZE - 1);
    if (start < kernel_end)
        return -ENOMEM;
    *address = start;
    return 0;
}

void linux_zero_page_build(uint8_t *zero_page, const uint8_t *image, const struct linux_setup_info *info,
                           const struct linux_boot_layout *layout)
{
    memset(zero_page, 0, BOOT_PARAMS_SIZE);
    memcpy(zero_page + BOOT_SETUP_SECTS, image + BOOT_SETUP_SECTS, info->header_end - BOOT_SETUP_SECTS);
    zero_page[BOOT_TYPE_OF_LOADER] = 0xff; /* "undefined" loader: no registered id */
    zero_page[BOOT_LOADFLAGS] = (uint8_t)(info->loadflags | BOOT_LOADFLAG_CAN_USE_HEAP);
    store_le16(zero_page + BOOT_HEAP_END_PTR, 0xfe00);
    store_le16(zero_page + BOOT_VID_MODE, 0xffff); /* "normal": no video mode to set */
    store_le32(zero_page + BOOT_CMD_LINE_PTR, (uint32_t)layout->cmdline_address);
    store_le32(zero_page + BOOT_EXT_CMD_LINE_PTR, (uint32_t)(layout->cmdline_address >> 32));
    store_le32(zero_page + BOOT_RAMDISK_IMAGE, (uint32_t)layout->initrd_address);
    store_le32(zero_page + BOOT_EXT_RAMDISK_IMAGE, (uint32_t)(layout->initrd_address >> 32));
    store_le32(zero_page + BOOT_RAMDISK_SIZE, (uint32_t)layout->initrd_size);
    store_le32(zero_page + BOOT_EXT_RAMDISK_SIZE, (uint32_t)(layout->initrd_size >> 32));
    store_le64(zero_page + BOOT_ACPI_RSDP_ADDR, layout->acpi_rsdp_address);
    unsigned count = layout->e820_count < BOOT_E820_MAX_ENTRIES ? layout->e820_count : BOOT_E820_MAX_ENTRIES;
    zero_page[BOOT_E820_ENTRIES] = (uint8_t)count;
    for (unsigned i = 0; i < count; i++) {
        uint8_t *entry = zero_page + BOOT_E820_TABLE + i * BOOT_E820_ENTRY_SIZE;
        store_le64(entry, layout->e820[i].address);
        store_le64(entry + 8, layout->e820[i].size);
        store_le32(entry + 16, layout->e820[i].type);
    }
}
