/*
 * The PM1 event block of vmm/acpi_pm.h: the power button's status bit, its
 * enable bit, write-one-to-clear, and the SCI level that follows them.
 */
#include <criterion/criterion.h>
#include <stdint.h>

#include "common/byte_order.h"
#include "vmm/acpi_pm.h"

#define PM1_STATUS 0u
#define PM1_ENABLE 2u

static struct acpi_pm pm;
static int sci_level = -1; /* -1: never set */
static unsigned sci_changes;

static void fake_set_sci(void *opaque, bool level)
{
    (void)opaque;
    sci_level = level;
    sci_changes++;
}

static void setup(void)
{
    cr_assert_eq(acpi_pm_init(&pm), 0);
    pm.set_sci = fake_set_sci;
    sci_level = -1;
    sci_changes = 0;
}

static void teardown(void)
{
    acpi_pm_destroy(&pm);
}

static uint16_t read16(uint64_t offset)
{
    uint8_t data[2];
    acpi_pm_event_read(&pm, offset, data, 2);
    return load_le16(data);
}

static void write16(uint64_t offset, uint16_t value)
{
    uint8_t data[2];
    store_le16(data, value);
    acpi_pm_event_write(&pm, offset, data, 2);
}

TestSuite(vmm_acpi_pm, .init = setup, .fini = teardown);

Test(vmm_acpi_pm, enabled_power_button_asserts_sci_until_cleared)
{
    write16(PM1_ENABLE, ACPI_PM1_PWRBTN);
    cr_assert_eq(read16(PM1_ENABLE), ACPI_PM1_PWRBTN, "ACPICA reads back what it enabled");
    cr_assert_eq(sci_level, 0);
    acpi_pm_press_power_button(&pm);
    cr_assert_eq(read16(PM1_STATUS), ACPI_PM1_PWRBTN);
    cr_assert_eq(sci_level, 1);
    write16(PM1_STATUS, 0x0001); /* another bit: write-one-to-clear leaves PWRBTN_STS */
    cr_assert_eq(read16(PM1_STATUS), ACPI_PM1_PWRBTN);
    cr_assert_eq(sci_level, 1);
    write16(PM1_STATUS, ACPI_PM1_PWRBTN);
    cr_assert_eq(read16(PM1_STATUS), 0);
    cr_assert_eq(sci_level, 0, "the handler's clear ends the level-triggered SCI");
}

Test(vmm_acpi_pm, disabled_power_button_sets_status_without_sci)
{
    acpi_pm_press_power_button(&pm);
    cr_assert_eq(read16(PM1_STATUS), ACPI_PM1_PWRBTN, "status is set whatever the enable");
    cr_assert_eq(sci_level, 0);
    write16(PM1_ENABLE, ACPI_PM1_PWRBTN); /* enabling a pending event raises the SCI then */
    cr_assert_eq(sci_level, 1);
    write16(PM1_ENABLE, 0);
    cr_assert_eq(sci_level, 0);
}

Test(vmm_acpi_pm, whole_block_write_and_byte_reads)
{
    acpi_pm_press_power_button(&pm);
    uint8_t block[4];
    store_le16(block, ACPI_PM1_PWRBTN);
    store_le16(block + 2, ACPI_PM1_PWRBTN);
    acpi_pm_event_write(&pm, 0, block, 4); /* clears the status, sets the enable */
    cr_assert_eq(read16(PM1_STATUS), 0);
    cr_assert_eq(read16(PM1_ENABLE), ACPI_PM1_PWRBTN);
    acpi_pm_press_power_button(&pm);
    uint8_t byte;
    acpi_pm_event_read(&pm, 1, &byte, 1);
    cr_assert_eq(byte, ACPI_PM1_PWRBTN >> 8, "PWRBTN_STS is bit 0 of the status' high byte");
    cr_assert_eq(sci_level, 1);
}

Test(vmm_acpi_pm, no_sci_wired_is_harmless)
{
    pm.set_sci = NULL;
    write16(PM1_ENABLE, ACPI_PM1_PWRBTN);
    acpi_pm_press_power_button(&pm);
    cr_assert_eq(read16(PM1_STATUS), ACPI_PM1_PWRBTN);
    cr_assert_eq(sci_changes, 0);
}
