#include "block/lvm/lvm_text.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/error_message.h"

/* Real metadata nests 4 deep and has a few thousand values; these only stop a hostile input. */
#define MAX_DEPTH 32
#define MAX_NODES 1000000

struct parser {
    const char *at, *end;
    unsigned line;
    unsigned nodes;
    char **error_message;
};

static int parse_error(struct parser *p, const char *what)
{
    return error_message_set(p->error_message, -EINVAL, "line %u: %s", p->line, what);
}

/* Skip blanks, newlines and comments. */
static void skip_space(struct parser *p)
{
    while (p->at < p->end) {
        char c = *p->at;
        if (c == '\n') {
            p->line++;
            p->at++;
        } else if (c == ' ' || c == '\t' || c == '\r') {
            p->at++;
        } else if (c == '#') {
            while (p->at < p->end && *p->at != '\n')
                p->at++;
        } else {
            break;
        }
    }
}

static bool is_name_char(char c) { return isalnum((unsigned char)c) || strchr("_.+-", c) != NULL; }

static struct lvm_node *node_new(struct parser *p, enum lvm_node_type type)
{
    if (++p->nodes > MAX_NODES) {
        parse_error(p, "too many values");
        return NULL;
    }
    struct lvm_node *node = calloc(1, sizeof(*node));
    if (!node) {
        error_message_set(p->error_message, -ENOMEM, "out of memory");
        return NULL;
    }
    node->type = type;
    node->line = p->line;
    return node;
}

static char *parse_name(struct parser *p)
{
    const char *start = p->at;
    while (p->at < p->end && is_name_char(*p->at))
        p->at++;
    if (p->at == start) {
        parse_error(p, "expected a name");
        return NULL;
    }
    char *name = strndup(start, (size_t)(p->at - start));
    if (!name)
        error_message_set(p->error_message, -ENOMEM, "out of memory");
    return name;
}

static int parse_string(struct parser *p, struct lvm_node *node)
{
    p->at++; /* the opening quote */
    size_t capacity = 16, used = 0;
    char *text = malloc(capacity);
    if (!text)
        return error_message_set(p->error_message, -ENOMEM, "out of memory");
    for (;;) {
        if (p->at >= p->end) {
            free(text);
            return parse_error(p, "unterminated string");
        }
        char c = *p->at++;
        if (c == '"')
            break;
        if (c == '\n')
            p->line++;
        if (c == '\\') {
            if (p->at >= p->end) {
                free(text);
                return parse_error(p, "unterminated string");
            }
            c = *p->at++;
        }
        if (used + 1 >= capacity) {
            char *grown = realloc(text, capacity * 2);
            if (!grown) {
                free(text);
                return error_message_set(p->error_message, -ENOMEM, "out of memory");
            }
            text = grown;
            capacity *= 2;
        }
        text[used++] = c;
    }
    text[used] = '\0';
    node->type = LVM_NODE_STRING;
    node->string = text;
    return 0;
}

static int parse_integer(struct parser *p, struct lvm_node *node)
{
    bool negative = *p->at == '-';
    if (negative)
        p->at++;
    if (p->at >= p->end || !isdigit((unsigned char)*p->at))
        return parse_error(p, "expected a value");
    uint64_t value = 0;
    while (p->at < p->end && isdigit((unsigned char)*p->at)) {
        unsigned digit = (unsigned)(*p->at++ - '0');
        if (value > (UINT64_C(0x7fffffffffffffff) - digit) / 10)
            return parse_error(p, "integer out of range");
        value = value * 10 + digit;
    }
    /* lvm writes a few values (none luna reads) as decimals: keep the integer part. */
    if (p->at < p->end && *p->at == '.') {
        p->at++;
        while (p->at < p->end && isdigit((unsigned char)*p->at))
            p->at++;
    }
    node->type = LVM_NODE_INTEGER;
    node->integer = negative ? -(int64_t)value : (int64_t)value;
    return 0;
}

static void append(struct lvm_node ***tail, struct lvm_node *node)
{
    **tail = node;
    *tail = &node->next;
}

static int parse_scalar(struct parser *p, struct lvm_node *node)
{
    if (p->at >= p->end)
        return parse_error(p, "expected a value");
    if (*p->at == '"')
        return parse_string(p, node);
    return parse_integer(p, node);
}

static int parse_array(struct parser *p, struct lvm_node *node)
{
    p->at++; /* [ */
    node->type = LVM_NODE_ARRAY;
    struct lvm_node **tail = &node->children;
    skip_space(p);
    if (p->at < p->end && *p->at == ']') {
        p->at++;
        return 0;
    }
    for (;;) {
        skip_space(p);
        struct lvm_node *element = node_new(p, LVM_NODE_INTEGER);
        if (!element)
            return -ENOMEM;
        append(&tail, element);
        int rc = parse_scalar(p, element);
        if (rc < 0)
            return rc;
        skip_space(p);
        if (p->at >= p->end)
            return parse_error(p, "unterminated array");
        if (*p->at == ']') {
            p->at++;
            return 0;
        }
        if (*p->at != ',')
            return parse_error(p, "expected ',' or ']' in an array");
        p->at++;
    }
}

/* Members until '}' (inside a section) or the end of the text (at the top). */
static int parse_members(struct parser *p, struct lvm_node *section, unsigned depth)
{
    if (depth > MAX_DEPTH)
        return parse_error(p, "sections nested too deep");
    struct lvm_node **tail = &section->children;
    for (;;) {
        skip_space(p);
        if (p->at >= p->end)
            return depth == 0 ? 0 : parse_error(p, "missing '}'");
        if (*p->at == '}') {
            if (depth == 0)
                return parse_error(p, "unexpected '}'");
            p->at++;
            return 0;
        }
        struct lvm_node *member = node_new(p, LVM_NODE_SECTION);
        if (!member)
            return -ENOMEM;
        append(&tail, member);
        member->key = parse_name(p);
        if (!member->key)
            return -EINVAL;
        skip_space(p);
        if (p->at >= p->end)
            return parse_error(p, "expected '=' or '{'");
        int rc;
        if (*p->at == '{') {
            p->at++;
            member->type = LVM_NODE_SECTION;
            rc = parse_members(p, member, depth + 1);
        } else if (*p->at == '=') {
            p->at++;
            skip_space(p);
            rc = p->at < p->end && *p->at == '[' ? parse_array(p, member) : parse_scalar(p, member);
        } else {
            rc = parse_error(p, "expected '=' or '{'");
        }
        if (rc < 0)
            return rc;
    }
}

int lvm_text_parse(const char *text, size_t length, struct lvm_node **root, char **error_message)
{
    struct parser p = {.at = text, .end = text + length, .line = 1, .error_message = error_message};
    /* The metadata area pads the text with NULs. */
    const char *nul = memchr(text, '\0', length);
    if (nul)
        p.end = nul;
    struct lvm_node *top = node_new(&p, LVM_NODE_SECTION);
    if (!top)
        return -ENOMEM;
    int rc = parse_members(&p, top, 0);
    if (rc < 0) {
        lvm_text_free(top);
        return rc;
    }
    *root = top;
    return 0;
}

void lvm_text_free(struct lvm_node *node)
{
    while (node) {
        struct lvm_node *next = node->next;
        lvm_text_free(node->children);
        free(node->key);
        free(node->string);
        free(node);
        node = next;
    }
}

const struct lvm_node *lvm_node_find(const struct lvm_node *section, const char *key)
{
    if (!section || section->type != LVM_NODE_SECTION)
        return NULL;
    for (const struct lvm_node *node = section->children; node; node = node->next)
        if (node->key && strcmp(node->key, key) == 0)
            return node;
    return NULL;
}
