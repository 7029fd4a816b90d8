/* The Linux boot protocol: setup header parsing, zero page, e820, initrd placement. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/byte_order.h"
#include "vmm/linux_boot.h"
#include "vmm/memory_layout.h"

#define IMAGE_SIZE (64 * 1024)

/* A synthetic bzImage: 27 setup sectors, protocol 2.15, 64-bit entry, like a current kernel. */
static uint8_t *make_image(void)
{
    uint8_t *image = calloc(1, IMAGE_SIZE);
    cr_assert_not_null(image);
    image[BOOT_SETUP_SECTS] = 27;
    store_le16(image + BOOT_BOOT_FLAG, BOOT_FLAG_MAGIC);
    image[BOOT_JUMP] = 0xeb;
    image[BOOT_JUMP + 1] = 0x6a; /* header ends at 0x26c */
    store_le32(image + BOOT_HEADER, BOOT_HEADER_MAGIC);
    store_le16(image + BOOT_VERSION, 0x020f);
    image[BOOT_LOADFLAGS] = BOOT_LOADFLAG_LOADED_HIGH;
    store_le32(image + BOOT_CODE32_START, 0x100000);
    store_le32(image + BOOT_INITRD_ADDR_MAX, 0x7fffffff);
    store_le32(image + BOOT_KERNEL_ALIGNMENT, 0x200000);
    image[BOOT_RELOCATABLE_KERNEL] = 1;
    store_le16(image + BOOT_XLOADFLAGS, BOOT_XLF_KERNEL_64 | 0x02);
    store_le32(image + BOOT_CMDLINE_SIZE, 2047);
    store_le64(image + BOOT_PREF_ADDRESS, 0x1000000);
    store_le32(image + BOOT_INIT_SIZE, 0x2000000);
    return image;
}

Test(vmm_boot, parses_a_current_header)
{
    uint8_t *image = make_image();
    struct linux_setup_info info;
    char *message = NULL;
    cr_assert_eq(linux_setup_parse(image, IMAGE_SIZE, &info, &message), 0);
    cr_assert_null(message);
    cr_assert_eq(info.version, 0x020f);
    cr_assert_eq(info.setup_size, 28 * 512);
    cr_assert_eq(info.header_end, 0x26c);
    cr_assert_eq(info.cmdline_size, 2047);
    cr_assert_eq(info.initrd_addr_max, 0x7fffffff);
    cr_assert_eq(info.pref_address, 0x1000000);
    cr_assert_eq(info.init_size, 0x2000000);
    free(image);
}

Test(vmm_boot, setup_sects_zero_means_four)
{
    uint8_t *image = make_image();
    image[BOOT_SETUP_SECTS] = 0;
    image[BOOT_JUMP + 1] = 0x60;
    struct linux_setup_info info;
    cr_assert_eq(linux_setup_parse(image, IMAGE_SIZE, &info, NULL), 0);
    cr_assert_eq(info.setup_size, 5 * 512);
    free(image);
}

static void expect_refused(uint8_t *image, size_t size, const char *needle)
{
    struct linux_setup_info info;
    char *message = NULL;
    cr_assert_eq(linux_setup_parse(image, size, &info, &message), -ENOEXEC);
    cr_assert_not_null(message);
    cr_assert(strstr(message, needle), "message '%s' lacks '%s'", message, needle);
    free(message);
    free(image);
}

Test(vmm_boot, refuses_bad_images)
{
    uint8_t *image = make_image();
    store_le32(image + BOOT_HEADER, 0x12345678);
    expect_refused(image, IMAGE_SIZE, "HdrS");

    image = make_image();
    store_le16(image + BOOT_BOOT_FLAG, 0);
    expect_refused(image, IMAGE_SIZE, "HdrS");

    image = make_image();
    store_le16(image + BOOT_VERSION, 0x0205);
    expect_refused(image, IMAGE_SIZE, "2.05");

    image = make_image();
    store_le16(image + BOOT_XLOADFLAGS, 0);
    expect_refused(image, IMAGE_SIZE, "64-bit");

    image = make_image();
    store_le16(image + BOOT_VERSION, 0x020b); /* before xloadflags: no way to know of a 64-bit entry */
    expect_refused(image, IMAGE_SIZE, "64-bit");

    image = make_image();
    image[BOOT_LOADFLAGS] = 0;
    expect_refused(image, IMAGE_SIZE, "zImage");

    image = make_image();
    expect_refused(image, 28 * 512, "setup code");

    image = make_image();
    expect_refused(image, 100, "HdrS"); /* shorter than a header */
}

Test(vmm_boot, e820_small_and_split)
{
    struct e820_entry entries[E820_LAYOUT_MAX];
    unsigned count = e820_layout(256ull << 20, entries);
    cr_assert_eq(count, 3);
    cr_assert_eq(entries[0].address, 0);
    cr_assert_eq(entries[0].size, 0xa0000);
    cr_assert_eq(entries[0].type, E820_TYPE_RAM);
    cr_assert_eq(entries[1].address, 0xe0000, "ACPI tables and MP table reserved");
    cr_assert_eq(entries[1].type, E820_TYPE_RESERVED);
    cr_assert_eq(entries[2].address, 0x100000);
    cr_assert_eq(entries[2].address + entries[2].size, 256ull << 20);

    count = e820_layout(4ull << 30, entries);
    cr_assert_eq(count, 4);
    cr_assert_eq(entries[2].address + entries[2].size, LAYOUT_LOW_RAM_LIMIT);
    cr_assert_eq(entries[3].address, LAYOUT_HIGH_RAM_START);
    cr_assert_eq(entries[3].size, (4ull << 30) - LAYOUT_LOW_RAM_LIMIT);
}

Test(vmm_boot, initrd_goes_high_aligned_and_above_the_kernel)
{
    uint8_t *image = make_image();
    struct linux_setup_info info;
    cr_assert_eq(linux_setup_parse(image, IMAGE_SIZE, &info, NULL), 0);
    uint64_t kernel_end = linux_kernel_end(&info, 8u << 20);
    cr_assert_eq(kernel_end, 0x1000000 + 0x2000000); /* decompresses at pref_address */
    uint64_t address;
    cr_assert_eq(linux_initrd_place(&info, 512ull << 20, kernel_end, 10000, &address), 0);
    cr_assert_eq(address % 4096, 0);
    cr_assert_leq(address + 10000, 512ull << 20);
    cr_assert_geq(address, (512ull << 20) - 16384);

    info.initrd_addr_max = 0x0fffffff; /* 256 MiB */
    cr_assert_eq(linux_initrd_place(&info, 512ull << 20, kernel_end, 10000, &address), 0);
    cr_assert_leq(address + 10000, 0x10000000);

    cr_assert_eq(linux_initrd_place(&info, 64ull << 20, kernel_end, 32ull << 20, &address), -ENOMEM);
    cr_assert_eq(linux_initrd_place(&info, 64ull << 20, kernel_end, 1ull << 40, &address), -ENOMEM);
    free(image);
}

Test(vmm_boot, zero_page_has_header_cmdline_initrd_and_e820)
{
    uint8_t *image = make_image();
    struct linux_setup_info info;
    cr_assert_eq(linux_setup_parse(image, IMAGE_SIZE, &info, NULL), 0);
    struct e820_entry e820[E820_LAYOUT_MAX];
    struct linux_boot_layout layout = {
        .cmdline_address = 0x20000,
        .initrd_address = 0x1f000000,
        .initrd_size = 0x123456,
        .e820 = e820,
        .e820_count = e820_layout(1ull << 30, e820),
    };
    uint8_t zero_page[BOOT_PARAMS_SIZE];
    memset(zero_page, 0xaa, sizeof(zero_page));
    linux_zero_page_build(zero_page, image, &info, &layout);
    cr_assert_eq(zero_page[0], 0, "outside the header the zero page is zero");
    cr_assert_eq(load_le32(zero_page + BOOT_HEADER), BOOT_HEADER_MAGIC);
    cr_assert_eq(load_le16(zero_page + BOOT_VERSION), 0x020f);
    cr_assert_eq(zero_page[BOOT_TYPE_OF_LOADER], 0xff);
    cr_assert(zero_page[BOOT_LOADFLAGS] & BOOT_LOADFLAG_LOADED_HIGH);
    cr_assert_eq(load_le32(zero_page + BOOT_CMD_LINE_PTR), 0x20000);
    cr_assert_eq(load_le32(zero_page + BOOT_EXT_CMD_LINE_PTR), 0);
    cr_assert_eq(load_le32(zero_page + BOOT_RAMDISK_IMAGE), 0x1f000000);
    cr_assert_eq(load_le32(zero_page + BOOT_RAMDISK_SIZE), 0x123456);
    cr_assert_eq(zero_page[BOOT_E820_ENTRIES], 3);
    const uint8_t *last = zero_page + BOOT_E820_TABLE + 2 * BOOT_E820_ENTRY_SIZE;
    cr_assert_eq(load_le64(last), 0x100000);
    cr_assert_eq(load_le64(last + 8), (1ull << 30) - 0x100000);
    cr_assert_eq(load_le32(last + 16), E820_TYPE_RAM);
    cr_assert_eq(zero_page[0x26c], 0, "nothing copied past the header's end");
    free(image);
}
