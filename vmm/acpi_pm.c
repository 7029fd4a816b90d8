#include "vmm/acpi_pm.h"

#include <string.h>

#include "common/byte_order.h"
#include "vmm/acpi_tables.h"
#include "vmm/io_bus.h"

#define PM1_SCI_EN 0x0001u
#define PM1_SLP_TYP_SHIFT 10
#define PM1_SLP_TYP_MASK 0x7u
#define PM1_SLP_EN 0x2000u

#define PM1_ENABLE_OFFSET 2u

/* With the lock held: the SCI is asserted while any enabled event's status is set. */
static void update_sci(struct acpi_pm *pm)
{
    if (pm->set_sci)
        pm->set_sci(pm->opaque, (pm->status & pm->enable) != 0);
}

void acpi_pm_event_read(void *opaque, uint64_t offset, uint8_t *data, unsigned length)
{
    struct acpi_pm *pm = opaque;
    uint8_t block[4];
    pthread_mutex_lock(&pm->lock);
    store_le16(block, pm->status);
    store_le16(block + PM1_ENABLE_OFFSET, pm->enable);
    pthread_mutex_unlock(&pm->lock);
    for (unsigned i = 0; i < length; i++)
        data[i] = offset + i < sizeof(block) ? block[offset + i] : 0;
}

void acpi_pm_event_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned length)
{
    struct acpi_pm *pm = opaque;
    pthread_mutex_lock(&pm->lock);
    /* Status bits are write-one-to-clear; ACPICA writes status and enable as 16-bit words,
     * and some guests write the whole block at once. */
    if (offset == 0 && length >= 2)
        pm->status &= (uint16_t)~load_le16(data);
    if (offset == PM1_ENABLE_OFFSET && length >= 2)
        pm->enable = load_le16(data);
    else if (offset == 0 && length == 4)
        pm->enable = load_le16(data + PM1_ENABLE_OFFSET);
    update_sci(pm);
    pthread_mutex_unlock(&pm->lock);
}

void acpi_pm_press_power_button(struct acpi_pm *pm)
{
    pthread_mutex_lock(&pm->lock);
    pm->status |= ACPI_PM1_PWRBTN;
    update_sci(pm);
    pthread_mutex_unlock(&pm->lock);
}

static void control_read(void *opaque, uint64_t offset, uint8_t *data, unsigned length)
{
    (void)opaque;
    memset(data, 0, length);
    if (offset == 0)
        data[0] = PM1_SCI_EN;
}

static void control_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned length)
{
    struct acpi_pm *pm = opaque;
    if (offset != 0 || length < 2)
        return;
    uint16_t value = load_le16(data);
    unsigned sleep_type = (value >> PM1_SLP_TYP_SHIFT) & PM1_SLP_TYP_MASK;
    if ((value & PM1_SLP_EN) && sleep_type == ACPI_S5_SLEEP_TYPE && pm->power_off)
        pm->power_off(pm->opaque);
}

int acpi_pm_init(struct acpi_pm *pm)
{
    pm->status = 0;
    pm->enable = 0;
    return -pthread_mutex_init(&pm->lock, NULL);
}

void acpi_pm_destroy(struct acpi_pm *pm)
{
    pthread_mutex_destroy(&pm->lock);
}

int acpi_pm_register(struct acpi_pm *pm, struct io_bus *ports)
{
    int ret = io_bus_register(ports, ACPI_PM1_EVENT_PORT, 4, acpi_pm_event_read, acpi_pm_event_write, pm);
    if (ret < 0)
        return ret;
    return io_bus_register(ports, ACPI_PM1_CONTROL_PORT, 2, control_read, control_write, pm);
}
