/*
 * fuzz_lvm_metadata: libFuzzer target for LVM2 in user space
 * (block/lvm): the text-metadata parser and segment mapping, and the PV
 * label and metadata-area reader.
 *
 * Each input is used twice:
 *  - as metadata text: lvm_vg_parse; when it succeeds, every LV that can
 *    be mapped is mapped at its first, middle and last byte, and every
 *    piece must lie inside the extent area of the PV it names and be no
 *    longer than asked (the parser's checks are what make this safe);
 *  - as the first bytes of a PV (the rest zeroes, 4 MiB in all):
 *    lvm_label_read, then lvm_metadata_area_read of each metadata area it
 *    lists, whose text is parsed too.
 *
 * What makes an input fail: sanitizer findings, leaks, results that are
 * not 0 or -errno, a failure without a message, a piece outside its PV.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/lvm/lvm_label.h"
#include "block/lvm/lvm_map.h"
#include "block/lvm/lvm_metadata.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PV_SIZE (4u << 20)

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_lvm_metadata: %s\n", what);
    abort();
}

static void check_result(int rc, const char *message)
{
    if (rc > 0 || rc < -4095)
        fail("a result that is not 0 or -errno");
    if (rc < 0 && rc != -ENOENT && rc != -ENOMEM && !message)
        fail("an error without a message");
}

static void check_piece(const struct lvm_vg *vg, const struct lvm_piece *piece, uint64_t asked)
{
    if (piece->pv >= vg->pv_count || piece->length == 0 || piece->length > asked)
        fail("a piece with a bad PV index or length");
    const struct lvm_pv *pv = &vg->pvs[piece->pv];
    uint64_t start = pv->pe_start * 512, end = start + pv->pe_count * vg->extent_size * 512;
    if (piece->offset < start || piece->offset > end || piece->length > end - piece->offset)
        fail("a piece outside its PV's extent area");
}

static void parse_and_map(const char *text, size_t length)
{
    struct lvm_vg vg;
    char *message = NULL;
    int rc = lvm_vg_parse(text, length, &vg, &message);
    check_result(rc, message);
    free(message);
    if (rc < 0)
        return;
    for (unsigned i = 0; i < vg.lv_count; i++) {
        const struct lvm_lv *lv = &vg.lvs[i];
        message = NULL;
        rc = lvm_lv_check_mappable(&vg, lv, &message);
        free(message);
        if (rc < 0)
            continue;
        uint64_t size = lvm_lv_size(&vg, lv);
        const uint64_t offsets[] = {0, size / 2, size - 1};
        for (size_t o = 0; o < 3; o++) {
            struct lvm_piece piece;
            lvm_map(&vg, lv, offsets[o], size - offsets[o], &piece);
            check_piece(&vg, &piece, size - offsets[o]);
        }
    }
    lvm_vg_clear(&vg);
}

static int memory_read(void *opaque, void *buffer, size_t length, uint64_t offset)
{
    const uint8_t *pv = opaque;
    if (offset > PV_SIZE || length > PV_SIZE - offset)
        return -EIO;
    memcpy(buffer, pv + offset, length);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parse_and_map((const char *)data, size);

    uint8_t *pv = calloc(1, PV_SIZE);
    if (!pv)
        fail("out of memory");
    memcpy(pv, data, size < PV_SIZE ? size : PV_SIZE);
    struct lvm_pv_label label;
    char *message = NULL;
    int rc = lvm_label_read(memory_read, pv, PV_SIZE, &label, &message);
    check_result(rc, message);
    free(message);
    for (unsigned a = 0; rc == 0 && a < label.metadata_area_count; a++) {
        char *text = NULL;
        size_t length = 0;
        message = NULL;
        int area_rc = lvm_metadata_area_read(memory_read, pv, PV_SIZE, &label.metadata_areas[a], &text, &length,
                                             &message);
        check_result(area_rc, message);
        free(message);
        if (area_rc == 0)
            parse_and_map(text, length);
        free(text);
    }
    free(pv);
    return 0;
}
