#include "vmm/long_mode.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "vmm/memory_layout.h"
#include "common/byte_order.h"

#define PAGE_PRESENT 0x1ull
#define PAGE_WRITABLE 0x2ull
#define PAGE_LARGE 0x80ull
#define LARGE_PAGE_SIZE (2ull << 20)
#define ENTRIES_PER_TABLE 512u

#define GDT_ENTRY_COUNT 5u

/* A descriptor from the packed flags/access word the kernel's GDT_ENTRY macro takes. */
static uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit)
{
    return ((uint64_t)(base & 0xff000000u) << (56 - 24)) | ((uint64_t)(flags & 0xf0ffu) << 40) |
           ((uint64_t)(limit & 0x000f0000u) << (48 - 16)) | ((uint64_t)(base & 0x00ffffffu) << 16) |
           (uint64_t)(limit & 0x0000ffffu);
}

static const uint64_t boot_gdt[GDT_ENTRY_COUNT] = {
    0,
    0,
    [BOOT_CODE_SELECTOR / 8] = 0x00af9b000000ffffull, /* 64-bit code, present, ring 0 */
    [BOOT_DATA_SELECTOR / 8] = 0x00cf93000000ffffull, /* flat 4 GiB data */
    [BOOT_TSS_SELECTOR / 8] = 0,                      /* filled from gdt_entry below */
};

int long_mode_write_tables(const struct guest_memory *memory)
{
    uint8_t *gdt = guest_memory_translate(memory, LAYOUT_GDT_ADDRESS, sizeof(boot_gdt));
    size_t tables_size = (2 + LAYOUT_PAGE_DIRECTORY_COUNT) * GUEST_PAGE_SIZE;
    uint8_t *pml4 = guest_memory_translate(memory, LAYOUT_PML4_ADDRESS, tables_size);
    if (!gdt || !pml4)
        return -EFAULT;
    for (unsigned i = 0; i < GDT_ENTRY_COUNT; i++) {
        uint64_t entry = boot_gdt[i];
        if (i == BOOT_TSS_SELECTOR / 8)
            entry = gdt_entry(0x808b, 0, 0xfffff);
        store_le64(gdt + 8 * i, entry);
    }

    memset(pml4, 0, tables_size);
    uint8_t *pdpt = pml4 + (LAYOUT_PDPT_ADDRESS - LAYOUT_PML4_ADDRESS);
    uint8_t *directories = pml4 + (LAYOUT_PD_ADDRESS - LAYOUT_PML4_ADDRESS);
    store_le64(pml4, LAYOUT_PDPT_ADDRESS | PAGE_PRESENT | PAGE_WRITABLE);
    for (unsigned d = 0; d < LAYOUT_PAGE_DIRECTORY_COUNT; d++) {
        store_le64(pdpt + 8 * d, (LAYOUT_PD_ADDRESS + d * GUEST_PAGE_SIZE) | PAGE_PRESENT | PAGE_WRITABLE);
        for (unsigned e = 0; e < ENTRIES_PER_TABLE; e++) {
            uint64_t address = ((uint64_t)d * ENTRIES_PER_TABLE + e) * LARGE_PAGE_SIZE;
            store_le64(directories + d * GUEST_PAGE_SIZE + 8 * e, address | PAGE_PRESENT | PAGE_WRITABLE | PAGE_LARGE);
        }
    }
    return 0;
}

static struct kvm_segment flat_segment(uint16_t selector, uint8_t type, bool code)
{
    return (struct kvm_segment){
        .base = 0,
        .limit = 0xffffffff,
        .selector = selector,
        .type = type,
        .present = 1,
        .dpl = 0,
        .db = code ? 0 : 1, /* long-mode code requires D = 0 */
        .s = 1,
        .l = code ? 1 : 0,
        .g = 1,
    };
}

void long_mode_set_sregs(struct kvm_sregs *sregs)
{
    sregs->gdt.base = LAYOUT_GDT_ADDRESS;
    sregs->gdt.limit = sizeof(boot_gdt) - 1;
    /* An empty IDT: the kernel runs with interrupts off until it loads its own. */
    sregs->idt.base = LAYOUT_IDT_ADDRESS;
    sregs->idt.limit = 0;

    sregs->cs = flat_segment(BOOT_CODE_SELECTOR, 0xb, true);
    struct kvm_segment data = flat_segment(BOOT_DATA_SELECTOR, 0x3, false);
    sregs->ds = data;
    sregs->es = data;
    sregs->fs = data;
    sregs->gs = data;
    sregs->ss = data;
    sregs->tr = (struct kvm_segment){
        .base = 0, .limit = 0xfffff, .selector = BOOT_TSS_SELECTOR, .type = 0xb, .present = 1, .s = 0};

    sregs->cr3 = LAYOUT_PML4_ADDRESS;
    sregs->cr4 = X86_CR4_PAE;
    sregs->cr0 = X86_CR0_PE | X86_CR0_MP | X86_CR0_ET | X86_CR0_NE | X86_CR0_WP | X86_CR0_AM | X86_CR0_PG;
    sregs->efer = X86_EFER_LME | X86_EFER_LMA;
}
