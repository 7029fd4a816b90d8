/*
 * The APTPL store: state files read at start-up, kept in memory, written
 * back on the thread pool.  Every write of the process goes through one
 * writer lock and always writes the newest text of its LUN, so two changes
 * in quick succession can never leave the older one on disk.
 */
#include "protocols/scsi/scsi_persist.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/aio.h"
#include "common/error_message.h"
#include "common/file_util.h"
#include "protocols/scsi/scsi_internal.h"

#define STATE_FILE_MAX (1u << 20) /* 64 registrations take a few KiB */

struct persist_entry {
    struct persist_entry *next;
    char *key;
    char *text;       /* the newest state; NULL: no file (APTPL turned off) */
    uint64_t version; /* of text */
    uint64_t written; /* the version on disk */
};

struct scsi_persist_store {
    char *directory;
    pthread_mutex_t lock;       /* entries and their texts */
    pthread_mutex_t write_lock; /* one file write at a time */
    struct persist_entry *entries;
};

/* ---- file names: the key, with every byte but [A-Za-z0-9._:,-] as %XX ---- */

static bool plain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("._:,-", c);
}

static char *file_name_of(const char *key)
{
    char *name = malloc(3 * strlen(key) + 1);
    if (!name)
        return NULL;
    char *at = name;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        if (plain(*p))
            *at++ = (char)*p;
        else
            at += sprintf(at, "%%%02X", *p);
    }
    *at = '\0';
    return name;
}

/* The key a file name stands for, or NULL when it is not one of ours. */
static char *key_of(const char *name)
{
    char *key = malloc(strlen(name) + 1);
    if (!key)
        return NULL;
    char *at = key;
    for (const char *p = name; *p; p++) {
        unsigned value;
        if (*p == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2]) &&
            sscanf(p + 1, "%2X", &value) == 1) {
            *at++ = (char)value;
            p += 2;
        } else if (plain((unsigned char)*p) && *p != '%') {
            *at++ = *p;
        } else {
            free(key);
            return NULL;
        }
    }
    *at = '\0';
    return key;
}

/* ---- the text: parsing (into a LUN, or only checking) and writing ---- */

static bool valid_type(unsigned type)
{
    return type == 1 || type == 3 || (type >= 5 && type <= 8);
}

static bool all_registrants_type(unsigned type)
{
    return type == 7 || type == 8;
}

/* A state file's contents, parsed. */
struct parsed_state {
    uint32_t generation;
    struct scsi_registration registrations[SCSI_MAX_REGISTRATIONS];
    size_t registration_count;
    bool reserved;
    unsigned type;
    char holder[256];
};

static void parsed_state_clear(struct parsed_state *state)
{
    for (size_t i = 0; i < state->registration_count; i++)
        free(state->registrations[i].nexus);
    state->registration_count = 0;
}

/* One record (a line without its newline).  0, or -EINVAL with *why, or -ENOMEM. */
static int parse_record(const char *record, struct parsed_state *state, const char **why)
{
    char word[16], nexus[300], extra;
    uint64_t number;
    if (record[0] == '\0' || record[0] == '#' || sscanf(record, "%15s", word) != 1)
        return 0; /* blank lines and comments */
    if (strcmp(word, "generation") == 0) {
        if (sscanf(record, "generation %" SCNu64 " %c", &number, &extra) != 1 || number > UINT32_MAX) {
            *why = "expected 'generation NUMBER'";
            return -EINVAL;
        }
        state->generation = (uint32_t)number;
    } else if (strcmp(word, "registration") == 0) {
        if (sscanf(record, "registration %" SCNx64 " %299s %c", &number, nexus, &extra) != 2 || number == 0 ||
            strlen(nexus) >= 256) {
            *why = "expected 'registration 0xKEY NEXUS' with a non-zero key";
            return -EINVAL;
        }
        if (state->registration_count == SCSI_MAX_REGISTRATIONS) {
            *why = "too many registrations";
            return -EINVAL;
        }
        char *copy = strdup(nexus);
        if (!copy)
            return -ENOMEM;
        state->registrations[state->registration_count++] = (struct scsi_registration){.nexus = copy, .key = number};
    } else if (strcmp(word, "reservation") == 0) {
        if (sscanf(record, "reservation %" SCNu64 " %299s %c", &number, nexus, &extra) != 2 ||
            !valid_type((unsigned)number) || strlen(nexus) >= 256 || state->reserved) {
            *why = "expected one 'reservation TYPE NEXUS' with a persistent reservation type";
            return -EINVAL;
        }
        state->reserved = true;
        state->type = (unsigned)number;
        memcpy(state->holder, nexus, strlen(nexus) + 1); /* shorter than 256: checked above */
    } else {
        *why = "unknown record";
        return -EINVAL;
    }
    return 0;
}

static bool registered(const struct parsed_state *state, const char *nexus)
{
    for (size_t i = 0; i < state->registration_count; i++)
        if (strcmp(state->registrations[i].nexus, nexus) == 0)
            return true;
    return false;
}

/*
 * Parse text into state (cleared by the caller with parsed_state_clear).
 * 0, or -EINVAL with *line (0: the file as a whole) and *why, or -ENOMEM.
 */
static int parse_state(const char *text, struct parsed_state *state, unsigned *line, const char **why)
{
    *state = (struct parsed_state){0};
    *line = 0;
    for (const char *p = text; *p;) {
        const char *end = strchr(p, '\n');
        size_t length = end ? (size_t)(end - p) : strlen(p);
        char record[400];
        ++*line;
        if (length >= sizeof(record)) {
            *why = "line too long";
            return -EINVAL;
        }
        memcpy(record, p, length);
        record[length] = '\0';
        p += length + (end ? 1 : 0);
        int rc = parse_record(record, state, why);
        if (rc < 0)
            return rc;
    }
    *line = 0;
    if (state->reserved && state->registration_count == 0) {
        *why = "a reservation without registrations";
        return -EINVAL;
    }
    if (state->reserved && !all_registrants_type(state->type) && !registered(state, state->holder)) {
        *why = "the reservation holder is not registered";
        return -EINVAL;
    }
    return 0;
}

char *scsi_persist_snapshot(struct scsi_lun *lun)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    if (!out)
        return NULL;
    fprintf(out, "# lunad: persistent reservations of one LUN (APTPL)\ngeneration %" PRIu32 "\n", lun->generation);
    for (size_t i = 0; i < lun->registration_count; i++)
        fprintf(out, "registration 0x%" PRIx64 " %s\n", lun->registrations[i].key, lun->registrations[i].nexus);
    if (lun->reserved)
        fprintf(out, "reservation %u %s\n", lun->reservation_type, lun->reservation_holder);
    if (fclose(out) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* ---- the store ---- */

static struct persist_entry *entry_find(struct scsi_persist_store *store, const char *key)
{
    for (struct persist_entry *entry = store->entries; entry; entry = entry->next)
        if (strcmp(entry->key, key) == 0)
            return entry;
    return NULL;
}

/* Read directory/name into a NUL-terminated text.  0 or -errno. */
static int read_state_file(const char *path, char **text)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) < 0)
        rc = -errno;
    else if (st.st_size > STATE_FILE_MAX)
        rc = -EFBIG;
    else if (!(*text = calloc(1, (size_t)st.st_size + 1)))
        rc = -ENOMEM;
    else if ((rc = file_pread_full(fd, *text, (size_t)st.st_size, 0)) == 0 && memchr(*text, 0, (size_t)st.st_size))
        rc = -EINVAL;
    close(fd);
    return rc;
}

static int load_directory(struct scsi_persist_store *store, char **error_message)
{
    DIR *directory = opendir(store->directory);
    if (!directory)
        return error_message_set(error_message, -errno, "%s: %s", store->directory, strerror(errno));
    int rc = 0;
    struct dirent *dirent;
    while (rc == 0 && (dirent = readdir(directory))) {
        const char *name = dirent->d_name;
        size_t length = strlen(name);
        if (name[0] == '.' || (length > 4 && strcmp(name + length - 4, ".tmp") == 0))
            continue; /* a write a crash interrupted: the file it was replacing holds the state */
        char *path = NULL, *key = key_of(name), *text = NULL;
        if (asprintf(&path, "%s/%s", store->directory, name) < 0) {
            path = NULL;
            rc = error_message_set(error_message, -ENOMEM, "out of memory");
        } else if (!key) {
            rc = error_message_set(error_message, -EINVAL, "%s: not a reservation state file", path);
        } else if ((rc = read_state_file(path, &text)) < 0) {
            error_message_set(error_message, rc, "%s: %s", path,
                              rc == -EINVAL ? "not a text file" : strerror(-rc));
        } else {
            unsigned line;
            const char *why = NULL;
            struct parsed_state *state = calloc(1, sizeof(*state));
            rc = state ? parse_state(text, state, &line, &why) : -ENOMEM;
            if (state)
                parsed_state_clear(state);
            free(state);
            struct persist_entry *entry = rc == 0 ? calloc(1, sizeof(*entry)) : NULL;
            if (rc == -EINVAL && line) {
                error_message_set(error_message, rc, "%s:%u: %s", path, line, why);
            } else if (rc < 0) {
                error_message_set(error_message, rc, "%s: %s", path, rc == -EINVAL ? why : strerror(-rc));
            } else if (!entry) {
                rc = error_message_set(error_message, -ENOMEM, "out of memory");
            } else {
                *entry = (struct persist_entry){.next = store->entries, .key = key, .text = text};
                store->entries = entry;
                key = text = NULL;
            }
        }
        free(path);
        free(key);
        free(text);
    }
    closedir(directory);
    return rc;
}

int scsi_persist_store_open(const char *directory, struct scsi_persist_store **out, char **error_message)
{
    int rc = file_make_directories(directory);
    if (rc < 0)
        return error_message_set(error_message, rc, "%s: cannot create the directory: %s", directory, strerror(-rc));
    struct scsi_persist_store *store = calloc(1, sizeof(*store));
    if (!store || !(store->directory = strdup(directory))) {
        free(store);
        return error_message_set(error_message, -ENOMEM, "out of memory");
    }
    pthread_mutex_init(&store->lock, NULL);
    pthread_mutex_init(&store->write_lock, NULL);
    rc = load_directory(store, error_message);
    if (rc < 0) {
        scsi_persist_store_close(store);
        return rc;
    }
    *out = store;
    return 0;
}

void scsi_persist_store_close(struct scsi_persist_store *store)
{
    if (!store)
        return;
    while (store->entries) {
        struct persist_entry *entry = store->entries;
        store->entries = entry->next;
        free(entry->key);
        free(entry->text);
        free(entry);
    }
    pthread_mutex_destroy(&store->lock);
    pthread_mutex_destroy(&store->write_lock);
    free(store->directory);
    free(store);
}

/* ---- what the LUN uses ---- */

int scsi_persist_restore(struct scsi_lun *lun)
{
    struct scsi_persist_store *store = lun->persist;
    if (!store)
        return 0;
    struct parsed_state *state = calloc(1, sizeof(*state));
    if (!state)
        return -ENOMEM;
    pthread_mutex_lock(&store->lock);
    struct persist_entry *entry = entry_find(store, lun->persist_key);
    int rc = 0;
    bool found = entry && entry->text;
    if (found) {
        unsigned line;
        const char *why;
        rc = parse_state(entry->text, state, &line, &why); /* checked when the store opened: only -ENOMEM */
    }
    pthread_mutex_unlock(&store->lock);
    if (found && rc == 0) {
        pthread_mutex_lock(&lun->lock);
        scsi_reservations_clear(lun);
        free(lun->registrations);
        lun->registrations = calloc(state->registration_count ? state->registration_count : 1,
                                    sizeof(*lun->registrations));
        if (!lun->registrations) {
            rc = -ENOMEM;
        } else {
            memcpy(lun->registrations, state->registrations,
                   state->registration_count * sizeof(*lun->registrations));
            lun->registration_count = state->registration_count;
            state->registration_count = 0; /* the LUN owns the names now */
            lun->generation = state->generation;
            lun->reserved = state->reserved;
            lun->reservation_type = (uint8_t)state->type;
            memcpy(lun->reservation_holder, state->holder, sizeof(lun->reservation_holder));
            lun->aptpl = true;
            scsi_reservations_changed(lun);
        }
        pthread_mutex_unlock(&lun->lock);
    }
    parsed_state_clear(state);
    free(state);
    return rc < 0 ? -ENOMEM : 0;
}

struct persist_write {
    struct scsi_persist_store *store;
    struct persist_entry *entry;
    uint64_t version;
    int result;
    struct scsi_task *task;
    void (*done)(struct scsi_task *task, int result);
};

static void write_run(void *arg)
{
    struct persist_write *write = arg;
    struct scsi_persist_store *store = write->store;
    struct persist_entry *entry = write->entry;
    pthread_mutex_lock(&store->write_lock);
    pthread_mutex_lock(&store->lock);
    uint64_t version = entry->version;
    bool covered = entry->written >= write->version; /* a later write already put a newer state there */
    char *text = !covered && entry->text ? strdup(entry->text) : NULL;
    bool lost = !covered && entry->text && !text;
    char *name = covered ? NULL : file_name_of(entry->key);
    pthread_mutex_unlock(&store->lock);
    int rc = 0;
    char *path = NULL;
    if (covered) {
        rc = 0;
    } else if (lost || !name || asprintf(&path, "%s/%s", store->directory, name) < 0) {
        path = NULL;
        rc = -ENOMEM;
    } else {
        rc = text ? file_replace_contents(path, text, strlen(text)) : file_remove_durably(path);
    }
    if (rc == 0 && !covered) {
        pthread_mutex_lock(&store->lock);
        entry->written = version;
        pthread_mutex_unlock(&store->lock);
    }
    pthread_mutex_unlock(&store->write_lock);
    free(text);
    free(name);
    free(path);
    write->result = rc;
}

static void write_done(void *arg)
{
    struct persist_write *write = arg;
    struct scsi_task *task = write->task;
    void (*done)(struct scsi_task *, int) = write->done;
    int result = write->result;
    free(write);
    done(task, result);
}

int scsi_persist_save(struct scsi_lun *lun, char *text, struct scsi_task *task,
                      void (*done)(struct scsi_task *task, int result))
{
    struct scsi_persist_store *store = lun->persist;
    struct persist_write *write = calloc(1, sizeof(*write));
    if (!write) {
        free(text);
        return -ENOMEM;
    }
    pthread_mutex_lock(&store->lock);
    struct persist_entry *entry = entry_find(store, lun->persist_key);
    if (!entry && (entry = calloc(1, sizeof(*entry)))) {
        if ((entry->key = strdup(lun->persist_key))) {
            entry->next = store->entries;
            store->entries = entry;
        } else {
            free(entry);
            entry = NULL;
        }
    }
    uint64_t version = 0;
    if (entry) {
        free(entry->text);
        entry->text = text; /* NULL: remove the file */
        version = ++entry->version;
    }
    pthread_mutex_unlock(&store->lock);
    if (!entry) {
        free(text);
        free(write);
        return -ENOMEM;
    }
    *write = (struct persist_write){.store = store, .entry = entry, .version = version, .task = task, .done = done};
    int rc = aio_context_run_blocking(task->ctx, write_run, write_done, write);
    if (rc < 0)
        free(write);
    return rc;
}
