#include "block/lvm/lvm_label.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/byte_order.h"
#include "common/error_message.h"

#define SECTOR 512u
#define LABEL_SCAN_SECTORS 4
#define LABEL_ID "LABELONE"
#define LABEL_TYPE "LVM2 001"
#define INITIAL_CRC 0xf597a6cfu
#define MDA_HEADER_SIZE 512u
#define MDA_MAGIC " LVM2 x[5A%r0N*>"
#define MDA_VERSION 1
#define RAW_LOCN_IGNORED 1u
#define MAX_METADATA_TEXT (64u << 20)

uint32_t lvm_crc(uint32_t initial, const void *buffer, size_t length)
{
    /* zlib inverts before and after; lvm does neither. */
    return ~(uint32_t)crc32(~initial, buffer, (uInt)length);
}

/* The PV header at offset in the label sector: UUID, size, then two lists of (offset, size) ending in zeroes. */
static int pv_header_parse(const uint8_t *sector, uint32_t offset, struct lvm_pv_label *label, char **error_message)
{
    if (offset < 32 || offset > SECTOR - (LVM_UUID_LENGTH + 8 + 16))
        return error_message_set(error_message, -EINVAL, "the LVM label's PV header offset %u is invalid", offset);
    memcpy(label->uuid, sector + offset, LVM_UUID_LENGTH);
    label->uuid[LVM_UUID_LENGTH] = '\0';
    label->device_size = load_le64(sector + offset + LVM_UUID_LENGTH);
    uint32_t at = offset + LVM_UUID_LENGTH + 8;
    for (int list = 0; list < 2; list++) {
        for (;;) {
            if (at + 16 > SECTOR)
                return error_message_set(error_message, -EINVAL, "the LVM PV header's area lists are unterminated");
            uint64_t area_offset = load_le64(sector + at), area_size = load_le64(sector + at + 8);
            at += 16;
            if (area_offset == 0 && area_size == 0)
                break;
            if (list == 1 && label->metadata_area_count < LVM_MAX_METADATA_AREAS)
                label->metadata_areas[label->metadata_area_count++] =
                    (struct lvm_area){.offset = area_offset, .size = area_size};
        }
    }
    return 0;
}

int lvm_label_read(lvm_read_fn read, void *opaque, uint64_t size, struct lvm_pv_label *label, char **error_message)
{
    *label = (struct lvm_pv_label){0};
    uint8_t sector[SECTOR];
    for (uint64_t index = 0; index < LABEL_SCAN_SECTORS && (index + 1) * SECTOR <= size; index++) {
        int rc = read(opaque, sector, SECTOR, index * SECTOR);
        if (rc < 0)
            return error_message_set(error_message, rc, "cannot read sector %llu", (unsigned long long)index);
        if (memcmp(sector, LABEL_ID, 8) != 0 || load_le64(sector + 8) != index)
            continue;
        uint32_t crc = load_le32(sector + 16);
        if (lvm_crc(INITIAL_CRC, sector + 20, SECTOR - 20) != crc)
            return error_message_set(error_message, -EINVAL, "the LVM label in sector %llu has a bad checksum",
                                     (unsigned long long)index);
        if (memcmp(sector + 24, LABEL_TYPE, 8) != 0)
            return error_message_set(error_message, -EINVAL, "the LVM label in sector %llu is not of type LVM2 001",
                                     (unsigned long long)index);
        return pv_header_parse(sector, load_le32(sector + 20), label, error_message);
    }
    return -ENOENT;
}

int lvm_metadata_area_read(lvm_read_fn read, void *opaque, uint64_t size, const struct lvm_area *area, char **text,
                           size_t *length, char **error_message)
{
    *text = NULL;
    *length = 0;
    if (area->size < 2 * MDA_HEADER_SIZE || area->offset > size || area->size > size - area->offset)
        return error_message_set(error_message, -EINVAL, "the metadata area at %llu+%llu does not fit the PV",
                                 (unsigned long long)area->offset, (unsigned long long)area->size);
    uint8_t header[MDA_HEADER_SIZE];
    int rc = read(opaque, header, sizeof(header), area->offset);
    if (rc < 0)
        return error_message_set(error_message, rc, "cannot read the metadata area header");
    if (memcmp(header + 4, MDA_MAGIC, 16) != 0)
        return error_message_set(error_message, -EINVAL, "the metadata area at %llu has no LVM2 header",
                                 (unsigned long long)area->offset);
    if (lvm_crc(INITIAL_CRC, header + 4, MDA_HEADER_SIZE - 4) != load_le32(header))
        return error_message_set(error_message, -EINVAL, "the metadata area header at %llu has a bad checksum",
                                 (unsigned long long)area->offset);
    if (load_le32(header + 20) != MDA_VERSION || load_le64(header + 24) != area->offset ||
        load_le64(header + 32) != area->size)
        return error_message_set(error_message, -EINVAL,
                                 "the metadata area header at %llu disagrees with the PV header (version %u)",
                                 (unsigned long long)area->offset, load_le32(header + 20));
    uint64_t text_offset = load_le64(header + 40), text_size = load_le64(header + 48);
    uint32_t text_crc = load_le32(header + 56), flags = load_le32(header + 60);
    if (text_offset == 0 || (flags & RAW_LOCN_IGNORED))
        return -ENOENT;
    if (text_offset < MDA_HEADER_SIZE || text_offset >= area->size || text_size == 0 ||
        text_size > area->size - MDA_HEADER_SIZE || text_size > MAX_METADATA_TEXT)
        return error_message_set(error_message, -EINVAL, "the metadata text location %llu+%llu is invalid",
                                 (unsigned long long)text_offset, (unsigned long long)text_size);
    char *buffer = malloc(text_size + 1);
    if (!buffer)
        return error_message_set(error_message, -ENOMEM, "out of memory");
    /* A circular buffer: what does not fit before the end continues after the header. */
    uint64_t first = text_size < area->size - text_offset ? text_size : area->size - text_offset;
    rc = read(opaque, buffer, first, area->offset + text_offset);
    if (rc == 0 && first < text_size)
        rc = read(opaque, buffer + first, text_size - first, area->offset + MDA_HEADER_SIZE);
    if (rc < 0) {
        free(buffer);
        return error_message_set(error_message, rc, "cannot read the metadata text");
    }
    if (lvm_crc(INITIAL_CRC, buffer, text_size) != text_crc) {
        free(buffer);
        return error_message_set(error_message, -EINVAL, "the metadata text at %llu has a bad checksum",
                                 (unsigned long long)(area->offset + text_offset));
    }
    buffer[text_size] = '\0';
    *text = buffer;
    *length = text_size;
    return 0;
}
