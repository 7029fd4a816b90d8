#include "block/lvm/lvm_metadata.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/lvm/lvm_text.h"
#include "common/error_message.h"

/* Bounds that keep byte arithmetic (extents x extent size x 512) far from overflow. */
#define MAX_EXTENT_SIZE (UINT64_C(1) << 32) /* sectors: 2 TiB extents */
#define MAX_EXTENTS (UINT64_C(1) << 32)
#define MAX_STRIPES 128

/* ---- typed lookups, each failing with a message naming the key ---- */

static int find_integer(const struct lvm_node *section, const char *key, uint64_t max, uint64_t *out,
                        char **error_message)
{
    const struct lvm_node *node = lvm_node_find(section, key);
    if (!node)
        return error_message_set(error_message, -EINVAL, "section '%s' (line %u) has no %s", section->key,
                                 section->line, key);
    if (node->type != LVM_NODE_INTEGER || node->integer < 0 || (uint64_t)node->integer > max)
        return error_message_set(error_message, -EINVAL, "line %u: %s is not an integer from 0 to %llu",
                                 node->line, key, (unsigned long long)max);
    *out = (uint64_t)node->integer;
    return 0;
}

static const char *find_string(const struct lvm_node *section, const char *key)
{
    const struct lvm_node *node = lvm_node_find(section, key);
    return node && node->type == LVM_NODE_STRING ? node->string : NULL;
}

static bool status_has(const struct lvm_node *section, const char *flag)
{
    const struct lvm_node *status = lvm_node_find(section, "status");
    if (!status || status->type != LVM_NODE_ARRAY)
        return false;
    for (const struct lvm_node *element = status->children; element; element = element->next)
        if (element->type == LVM_NODE_STRING && strcmp(element->string, flag) == 0)
            return true;
    return false;
}

static unsigned count_sections(const struct lvm_node *section)
{
    unsigned count = 0;
    if (section)
        for (const struct lvm_node *node = section->children; node; node = node->next)
            count += node->type == LVM_NODE_SECTION;
    return count;
}

/* ---- physical volumes ---- */

/* Whether extents of extent_size sectors, as bytes past start sectors, stay below 2^63. */
static bool bytes_fit(uint64_t start, uint64_t extents, uint64_t extent_size)
{
    uint64_t limit = (UINT64_C(1) << 63) / 512;
    return start <= limit && extents <= (limit - start) / extent_size;
}

static int parse_pv(const struct lvm_vg *vg, const struct lvm_node *section, struct lvm_pv *pv,
                    char **error_message)
{
    pv->name = strdup(section->key);
    if (!pv->name)
        return -ENOMEM;
    const char *id = find_string(section, "id");
    size_t length = 0;
    for (const char *c = id; c && *c; c++) {
        if (*c == '-')
            continue;
        if (length == LVM_UUID_LENGTH)
            return error_message_set(error_message, -EINVAL, "line %u: physical volume %s: id is too long",
                                     section->line, section->key);
        pv->uuid[length++] = *c;
    }
    if (length != LVM_UUID_LENGTH)
        return error_message_set(error_message, -EINVAL, "line %u: physical volume %s has no valid id",
                                 section->line, section->key);
    pv->uuid[length] = '\0';
    int rc = find_integer(section, "pe_start", UINT64_MAX >> 10, &pv->pe_start, error_message);
    if (rc == 0)
        rc = find_integer(section, "pe_count", MAX_EXTENTS, &pv->pe_count, error_message);
    if (rc == 0 && !bytes_fit(pv->pe_start, pv->pe_count, vg->extent_size))
        rc = error_message_set(error_message, -EINVAL, "line %u: physical volume %s is too large", section->line,
                               section->key);
    return rc;
}

static int find_pv(const struct lvm_vg *vg, const char *name)
{
    for (unsigned i = 0; i < vg->pv_count; i++)
        if (strcmp(vg->pvs[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* ---- logical volumes ---- */

static int parse_stripes(const struct lvm_vg *vg, const struct lvm_node *section, struct lvm_segment *segment,
                         char **error_message)
{
    const struct lvm_node *list = lvm_node_find(section, "stripes");
    if (!list || list->type != LVM_NODE_ARRAY)
        return error_message_set(error_message, -EINVAL, "line %u: segment has no stripes list", section->line);
    segment->stripes = calloc(segment->stripe_count, sizeof(*segment->stripes));
    if (!segment->stripes)
        return -ENOMEM;
    uint64_t per_stripe = segment->extent_count / segment->stripe_count;
    const struct lvm_node *element = list->children;
    for (uint32_t i = 0; i < segment->stripe_count; i++) {
        const struct lvm_node *pv_name = element, *extent = element ? element->next : NULL;
        if (!pv_name || pv_name->type != LVM_NODE_STRING || !extent || extent->type != LVM_NODE_INTEGER ||
            extent->integer < 0)
            return error_message_set(error_message, -EINVAL,
                                     "line %u: stripes must list %u pairs of a PV name and an extent", list->line,
                                     segment->stripe_count);
        int pv = find_pv(vg, pv_name->string);
        if (pv < 0)
            return error_message_set(error_message, -EINVAL, "line %u: stripe on unknown physical volume '%s'",
                                     pv_name->line, pv_name->string);
        uint64_t start = (uint64_t)extent->integer;
        if (start > vg->pvs[pv].pe_count || per_stripe > vg->pvs[pv].pe_count - start)
            return error_message_set(error_message, -EINVAL,
                                     "line %u: stripe extents %llu+%llu lie beyond %s's %llu extents", extent->line,
                                     (unsigned long long)start, (unsigned long long)per_stripe, pv_name->string,
                                     (unsigned long long)vg->pvs[pv].pe_count);
        segment->stripes[i] = (struct lvm_stripe){.pv = (unsigned)pv, .start_extent = start};
        element = extent->next;
    }
    return 0;
}

static int parse_segment(const struct lvm_vg *vg, const struct lvm_node *section, uint64_t expected_start,
                         struct lvm_segment *segment, char **error_message)
{
    const char *type = find_string(section, "type");
    if (!type)
        return error_message_set(error_message, -EINVAL, "line %u: segment has no type", section->line);
    segment->type = strdup(type);
    if (!segment->type)
        return -ENOMEM;
    int rc = find_integer(section, "start_extent", MAX_EXTENTS, &segment->start_extent, error_message);
    if (rc == 0)
        rc = find_integer(section, "extent_count", MAX_EXTENTS, &segment->extent_count, error_message);
    if (rc < 0)
        return rc;
    if (segment->start_extent != expected_start || segment->extent_count == 0)
        return error_message_set(error_message, -EINVAL,
                                 "line %u: segment starts at extent %llu with %llu extents (expected to start at "
                                 "%llu)",
                                 section->line, (unsigned long long)segment->start_extent,
                                 (unsigned long long)segment->extent_count, (unsigned long long)expected_start);
    if (strcmp(type, "striped") != 0)
        return 0; /* not mapped: lvm_lv_check_mappable names it */
    uint64_t stripes = 0; /* set by find_integer on success; GCC -O3 cannot see that */
    rc = find_integer(section, "stripe_count", MAX_STRIPES, &stripes, error_message);
    if (rc < 0)
        return rc;
    if (stripes == 0 || segment->extent_count % stripes)
        return error_message_set(error_message, -EINVAL, "line %u: %llu extents do not divide into %llu stripes",
                                 section->line, (unsigned long long)segment->extent_count,
                                 (unsigned long long)stripes);
    segment->stripe_count = (uint32_t)stripes;
    if (stripes > 1) {
        rc = find_integer(section, "stripe_size", vg->extent_size, &segment->stripe_size, error_message);
        if (rc < 0)
            return rc;
        if (segment->stripe_size == 0 || (segment->stripe_size & (segment->stripe_size - 1)) ||
            vg->extent_size % segment->stripe_size)
            return error_message_set(error_message, -EINVAL,
                                     "line %u: stripe_size %llu is not a power of two dividing the extent size",
                                     section->line, (unsigned long long)segment->stripe_size);
    }
    return parse_stripes(vg, section, segment, error_message);
}

static int parse_lv(const struct lvm_vg *vg, const struct lvm_node *section, struct lvm_lv *lv,
                    char **error_message)
{
    lv->name = strdup(section->key);
    if (!lv->name)
        return -ENOMEM;
    lv->writable = status_has(section, "WRITE");
    uint64_t count = 0; /* set by find_integer on success; GCC -O3 cannot see that */
    int rc = find_integer(section, "segment_count", MAX_EXTENTS, &count, error_message);
    if (rc < 0)
        return rc;
    if (count == 0 || count != count_sections(section))
        return error_message_set(error_message, -EINVAL, "line %u: logical volume %s: segment_count %llu, but %u "
                                 "segments",
                                 section->line, section->key, (unsigned long long)count, count_sections(section));
    lv->segments = calloc(count, sizeof(*lv->segments));
    if (!lv->segments)
        return -ENOMEM;
    lv->segment_count = (uint32_t)count;
    uint64_t next = 0;
    for (uint32_t i = 0; i < lv->segment_count; i++) {
        char key[32];
        snprintf(key, sizeof(key), "segment%u", i + 1);
        const struct lvm_node *segment = lvm_node_find(section, key);
        if (!segment || segment->type != LVM_NODE_SECTION)
            return error_message_set(error_message, -EINVAL, "line %u: logical volume %s has no %s", section->line,
                                     section->key, key);
        rc = parse_segment(vg, segment, next, &lv->segments[i], error_message);
        if (rc < 0)
            return rc;
        next += lv->segments[i].extent_count;
        if (!bytes_fit(0, next, vg->extent_size))
            return error_message_set(error_message, -EINVAL, "line %u: logical volume %s is too large",
                                     section->line, section->key);
    }
    return 0;
}

/* A snapshot's origin and copy-on-write store must not be written around device-mapper. */
static void mark_snapshot_members(struct lvm_vg *vg, const struct lvm_node *lvs)
{
    for (const struct lvm_node *lv = lvs->children; lv; lv = lv->next) {
        for (const struct lvm_node *segment = lv->children; segment; segment = segment->next) {
            if (segment->type != LVM_NODE_SECTION)
                continue;
            const char *type = find_string(segment, "type");
            if (!type || strcmp(type, "snapshot"))
                continue;
            const char *origin = find_string(segment, "origin"), *store = find_string(segment, "cow_store");
            for (unsigned i = 0; i < vg->lv_count; i++) {
                const char *name = vg->lvs[i].name;
                if ((origin && strcmp(name, origin) == 0) || (store && strcmp(name, store) == 0))
                    vg->lvs[i].in_snapshot = true;
            }
        }
    }
}

int lvm_vg_parse(const char *text, size_t length, struct lvm_vg *vg, char **error_message)
{
    *vg = (struct lvm_vg){0};
    struct lvm_node *root;
    int rc = lvm_text_parse(text, length, &root, error_message);
    if (rc < 0)
        return rc;
    const struct lvm_node *section = root->children;
    while (section && section->type != LVM_NODE_SECTION)
        section = section->next;
    if (!section) {
        lvm_text_free(root);
        return error_message_set(error_message, -EINVAL, "no volume group section in the metadata");
    }
    vg->name = strdup(section->key);
    rc = vg->name ? 0 : -ENOMEM;
    if (rc == 0)
        rc = find_integer(section, "seqno", UINT64_MAX >> 1, &vg->seqno, error_message);
    if (rc == 0)
        rc = find_integer(section, "extent_size", MAX_EXTENT_SIZE, &vg->extent_size, error_message);
    if (rc == 0 && vg->extent_size == 0)
        rc = error_message_set(error_message, -EINVAL, "volume group %s: extent_size is 0", section->key);
    const struct lvm_node *pvs = lvm_node_find(section, "physical_volumes");
    if (rc == 0 && (!pvs || pvs->type != LVM_NODE_SECTION))
        rc = error_message_set(error_message, -EINVAL, "volume group %s has no physical_volumes", section->key);
    if (rc == 0) {
        vg->pvs = calloc(count_sections(pvs) + 1, sizeof(*vg->pvs));
        rc = vg->pvs ? 0 : -ENOMEM;
        for (const struct lvm_node *pv = pvs->children; rc == 0 && pv; pv = pv->next)
            if (pv->type == LVM_NODE_SECTION)
                rc = parse_pv(vg, pv, &vg->pvs[vg->pv_count++], error_message);
    }
    const struct lvm_node *lvs = lvm_node_find(section, "logical_volumes");
    if (rc == 0 && lvs && lvs->type == LVM_NODE_SECTION) {
        vg->lvs = calloc(count_sections(lvs) + 1, sizeof(*vg->lvs));
        rc = vg->lvs ? 0 : -ENOMEM;
        for (const struct lvm_node *lv = lvs->children; rc == 0 && lv; lv = lv->next)
            if (lv->type == LVM_NODE_SECTION)
                rc = parse_lv(vg, lv, &vg->lvs[vg->lv_count++], error_message);
        if (rc == 0)
            mark_snapshot_members(vg, lvs);
    }
    lvm_text_free(root);
    if (rc == -ENOMEM)
        error_message_set(error_message, rc, "out of memory");
    if (rc < 0)
        lvm_vg_clear(vg);
    return rc;
}

void lvm_vg_clear(struct lvm_vg *vg)
{
    for (unsigned i = 0; i < vg->pv_count; i++)
        free(vg->pvs[i].name);
    for (unsigned i = 0; i < vg->lv_count; i++) {
        struct lvm_lv *lv = &vg->lvs[i];
        for (uint32_t s = 0; lv->segments && s < lv->segment_count; s++) {
            free(lv->segments[s].type);
            free(lv->segments[s].stripes);
        }
        free(lv->segments);
        free(lv->name);
    }
    free(vg->pvs);
    free(vg->lvs);
    free(vg->name);
    *vg = (struct lvm_vg){0};
}

const struct lvm_lv *lvm_vg_find_lv(const struct lvm_vg *vg, const char *name)
{
    for (unsigned i = 0; i < vg->lv_count; i++)
        if (strcmp(vg->lvs[i].name, name) == 0)
            return &vg->lvs[i];
    return NULL;
}

int lvm_lv_check_mappable(const struct lvm_vg *vg, const struct lvm_lv *lv, char **error_message)
{
    for (uint32_t i = 0; i < lv->segment_count; i++)
        if (strcmp(lv->segments[i].type, "striped") != 0)
            return error_message_set(error_message, -ENOTSUP,
                                     "%s/%s: segment %u is of type '%s': luna maps linear and striped logical "
                                     "volumes only (thin, raid, mirror, cache and snapshot volumes need "
                                     "device-mapper)",
                                     vg->name, lv->name, i + 1, lv->segments[i].type);
    return 0;
}

bool lvm_lv_same_mapping(const struct lvm_vg *a, const struct lvm_lv *lv_a, const struct lvm_vg *b,
                         const struct lvm_lv *lv_b)
{
    if (a->extent_size != b->extent_size || lv_a->segment_count != lv_b->segment_count)
        return false;
    for (uint32_t i = 0; i < lv_a->segment_count; i++) {
        const struct lvm_segment *x = &lv_a->segments[i], *y = &lv_b->segments[i];
        if (x->extent_count != y->extent_count || x->stripe_count != y->stripe_count ||
            x->stripe_size != y->stripe_size || strcmp(x->type, y->type))
            return false;
        for (uint32_t s = 0; s < x->stripe_count; s++) {
            const struct lvm_pv *pv_x = &a->pvs[x->stripes[s].pv], *pv_y = &b->pvs[y->stripes[s].pv];
            if (x->stripes[s].start_extent != y->stripes[s].start_extent || strcmp(pv_x->uuid, pv_y->uuid) ||
                pv_x->pe_start != pv_y->pe_start)
                return false;
        }
    }
    return true;
}
