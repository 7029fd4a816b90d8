#include "vmm/acpi_pm.h"

#include <stdatomic.h>
#include <string.h>

#include "common/byte_order.h"
#include "vmm/acpi_tables.h"
#include "vmm/io_bus.h"
#include "vmm/store_le.h"

#define PM1_SCI_EN 0x0001u
#define PM1_SLP_TYP_SHIFT 10
#define PM1_SLP_TYP_MASK 0x7u
#define PM1_SLP_EN 0x2000u

#define PM1_ENABLE_OFFSET 2u

static void event_read(void *opaque, uint64_t offset, uint8_t *data, unsigned length)
{
    struct acpi_pm *pm = opaque;
    uint8_t block[4] = {0};
    store_le16(block + PM1_ENABLE_OFFSET, atomic_load(&pm->enable));
    for (unsigned i = 0; i < length; i++)
        data[i] = offset + i < sizeof(block) ? block[offset + i] : 0;
}

static void event_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned length)
{
    struct acpi_pm *pm = opaque;
    /* Status bits are write-one-to-clear and none is ever set: only the enable word matters. */
    if (offset == PM1_ENABLE_OFFSET && length >= 2)
        atomic_store(&pm->enable, load_le16(data));
    else if (offset == 0 && length == 4)
        atomic_store(&pm->enable, load_le16(data + PM1_ENABLE_OFFSET));
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

int acpi_pm_register(struct acpi_pm *pm, struct io_bus *ports)
{
    int ret = io_bus_register(ports, ACPI_PM1_EVENT_PORT, 4, event_read, event_write, pm);
    if (ret < 0)
        return ret;
    return io_bus_register(ports, ACPI_PM1_CONTROL_PORT, 2, control_read, control_write, pm);
}
