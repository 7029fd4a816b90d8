/*
 * The DSDT's AML: Scope (\_SB) { Device (VRnn) { _HID "LNRO0005", _UID,
 * _CRS { Memory32Fixed, Interrupt } } ... } and Name (_S5, Package {5, 5, 0, 0}),
 * encoded by hand (ACPI 6.4, chapter 20): a handful of fixed constructs do
 * not justify an AML compiler.
 */
#include "vmm/acpi_tables.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "common/byte_order.h"

#define AML_NAME_OP 0x08
#define AML_BYTE_PREFIX 0x0a
#define AML_STRING_PREFIX 0x0d
#define AML_SCOPE_OP 0x10
#define AML_BUFFER_OP 0x11
#define AML_PACKAGE_OP 0x12
#define AML_EXT_OP_PREFIX 0x5b
#define AML_DEVICE_OP 0x82
#define AML_ROOT_CHAR 0x5c
#define AML_ZERO_OP 0x00

struct aml {
    uint8_t *bytes;
    size_t capacity;
    size_t length;
    bool overflow;
};

static void emit(struct aml *aml, const void *data, size_t length)
{
    if (aml->overflow || length > aml->capacity - aml->length) {
        aml->overflow = true;
        return;
    }
    memcpy(aml->bytes + aml->length, data, length);
    aml->length += length;
}

static void emit_byte(struct aml *aml, uint8_t byte)
{
    emit(aml, &byte, 1);
}

/*
 * PkgLength counts itself: content_length bytes follow it.  One byte up to
 * 63, else a lead byte (count of extra bytes in bits 7-6, low nibble) and
 * the remaining bits 8 at a time.
 */
static void emit_package_length(struct aml *aml, size_t content_length)
{
    if (content_length + 1 <= 63) {
        emit_byte(aml, (uint8_t)(content_length + 1));
        return;
    }
    unsigned extra = content_length + 2 < (1u << 12) ? 1 : content_length + 3 < (1u << 20) ? 2 : 3;
    size_t total = content_length + 1 + extra;
    emit_byte(aml, (uint8_t)((extra << 6) | (total & 0x0f)));
    for (unsigned i = 0; i < extra; i++)
        emit_byte(aml, (uint8_t)(total >> (4 + 8 * i)));
}

static void emit_name_integer(struct aml *aml, const char *name, uint8_t value)
{
    emit_byte(aml, AML_NAME_OP);
    emit(aml, name, 4);
    emit_byte(aml, AML_BYTE_PREFIX);
    emit_byte(aml, value);
}

static void emit_name_string(struct aml *aml, const char *name, const char *value)
{
    emit_byte(aml, AML_NAME_OP);
    emit(aml, name, 4);
    emit_byte(aml, AML_STRING_PREFIX);
    emit(aml, value, strlen(value) + 1);
}

#define CRS_SIZE 23u /* Memory32Fixed (12) + extended interrupt (9) + end tag (2) */

static void emit_resources(struct aml *aml, const struct acpi_mmio_device *device)
{
    uint8_t crs[CRS_SIZE];
    crs[0] = 0x86; /* Memory32Fixed */
    store_le16(crs + 1, 9);
    crs[3] = 1; /* read-write */
    store_le32(crs + 4, (uint32_t)device->base);
    store_le32(crs + 8, device->size);
    crs[12] = 0x89; /* extended interrupt */
    store_le16(crs + 13, 6);
    crs[15] = 0x03; /* consumer, edge-triggered, active-high, exclusive: virtio-mmio pulses its line */
    crs[16] = 1;    /* one interrupt */
    store_le32(crs + 17, device->irq);
    crs[21] = 0x79; /* end tag */
    crs[22] = 0;    /* checksum 0: "treat as correct" */

    emit_byte(aml, AML_NAME_OP);
    emit(aml, "_CRS", 4);
    emit_byte(aml, AML_BUFFER_OP);
    emit_package_length(aml, 2 + CRS_SIZE);
    emit_byte(aml, AML_BYTE_PREFIX);
    emit_byte(aml, CRS_SIZE);
    emit(aml, crs, CRS_SIZE);
}

/* One device's body, measured by building it into a scratch buffer first. */
static void emit_device(struct aml *aml, unsigned index, const struct acpi_mmio_device *device)
{
    uint8_t scratch[128];
    struct aml body = {scratch, sizeof(scratch), 0, false};
    char name[5] = {'V', 'R', "0123456789ABCDEF"[(index >> 4) & 0xf], "0123456789ABCDEF"[index & 0xf], 0};
    emit(&body, name, 4);
    emit_name_string(&body, "_HID", "LNRO0005");
    emit_name_integer(&body, "_UID", (uint8_t)index);
    emit_resources(&body, device);
    emit_byte(aml, AML_EXT_OP_PREFIX);
    emit_byte(aml, AML_DEVICE_OP);
    emit_package_length(aml, body.length);
    emit(aml, scratch, body.length);
    aml->overflow |= body.overflow;
}

long acpi_dsdt_body(uint8_t *buffer, size_t capacity, const struct acpi_mmio_device *devices, unsigned count)
{
    struct aml aml = {buffer, capacity, 0, false};
    uint8_t devices_aml[ACPI_MAX_DEVICES * 128];
    struct aml scope = {devices_aml, sizeof(devices_aml), 0, false};
    if (count > ACPI_MAX_DEVICES)
        return -EINVAL;
    static const uint8_t system_bus[] = {AML_ROOT_CHAR, '_', 'S', 'B', '_'};
    emit(&scope, system_bus, sizeof(system_bus));
    for (unsigned i = 0; i < count; i++)
        emit_device(&scope, i, &devices[i]);
    emit_byte(&aml, AML_SCOPE_OP);
    emit_package_length(&aml, scope.length);
    emit(&aml, devices_aml, scope.length);

    static const uint8_t sleep_state[] = {
        AML_NAME_OP, '_', 'S', '5', '_', AML_PACKAGE_OP, 0x08 /* PkgLength: itself and 7 bytes */, 4,
        AML_BYTE_PREFIX, ACPI_S5_SLEEP_TYPE, AML_BYTE_PREFIX, ACPI_S5_SLEEP_TYPE, AML_ZERO_OP, AML_ZERO_OP,
    };
    emit(&aml, sleep_state, sizeof(sleep_state));
    if (aml.overflow || scope.overflow)
        return -ENOSPC;
    return (long)aml.length;
}
