/*
 * lvm_text: a parser for LVM2's text metadata, the syntax of the volume
 * group description lvm writes into every PV's metadata area:
 *
 *     name {                 a section
 *         key = 123          an integer
 *         key = "text"       a string (\" and \\ escaped)
 *         key = ["a", 1]     an array of integers and strings
 *     }                      # comments run to the end of the line
 *
 * It knows nothing of volume groups (lvm_metadata.h reads those out of the
 * tree).  Pure over a byte buffer: the input is hostile (it comes from a
 * disk), so it is bounded in depth and node count and every error names
 * the line.
 */
#ifndef LUNA_BLOCK_LVM_LVM_TEXT_H
#define LUNA_BLOCK_LVM_LVM_TEXT_H

#include <stddef.h>
#include <stdint.h>

enum lvm_node_type {
    LVM_NODE_INTEGER,
    LVM_NODE_STRING,
    LVM_NODE_ARRAY,   /* children: the elements (no keys) */
    LVM_NODE_SECTION, /* children: the members */
};

struct lvm_node {
    char *key; /* NULL for array elements and the root */
    enum lvm_node_type type;
    int64_t integer;
    char *string;
    struct lvm_node *children;
    struct lvm_node *next;
    unsigned line;
};

/* Parse text into a root section.  0, or -EINVAL / -ENOMEM with a message "line N: ...". */
int lvm_text_parse(const char *text, size_t length, struct lvm_node **root, char **error_message);

void lvm_text_free(struct lvm_node *node);

/* The first member of section called key, or NULL. */
const struct lvm_node *lvm_node_find(const struct lvm_node *section, const char *key);

#endif
