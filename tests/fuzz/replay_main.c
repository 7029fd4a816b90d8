/*
 * replay_main: runs a libFuzzer target without libFuzzer.
 *
 * Linked with a fuzz target's source in the normal (gcc) build, it feeds
 * LLVMFuzzerTestOneInput every file of the directories (or the files) named
 * on the command line, so the seed corpus and every checked-in crash
 * reproducer run in each ctest run, sanitizer build included.  Names that
 * start with '.' are skipped (.gitkeep keeps an empty directory in git).
 * Exits non-zero when an argument cannot be read or no input was found; a
 * failing input aborts inside the target, as it would under libFuzzer.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int read_file(const char *path, uint8_t **data, size_t *size)
{
    FILE *file = fopen(path, "rb");
    if (!file)
        return -errno;
    size_t capacity = 4096, length = 0;
    uint8_t *buffer = malloc(capacity);
    int ret = buffer ? 0 : -ENOMEM;
    while (ret == 0) {
        if (length == capacity) {
            uint8_t *bigger = realloc(buffer, capacity * 2);
            if (!bigger) {
                ret = -ENOMEM;
                break;
            }
            buffer = bigger;
            capacity *= 2;
        }
        size_t n = fread(buffer + length, 1, capacity - length, file);
        length += n;
        if (n == 0) {
            if (ferror(file))
                ret = -EIO;
            break;
        }
    }
    fclose(file);
    if (ret < 0) {
        free(buffer);
        return ret;
    }
    *data = buffer;
    *size = length;
    return 0;
}

static int run_file(const char *path)
{
    uint8_t *data = NULL;
    size_t size = 0;
    int ret = read_file(path, &data, &size);
    if (ret < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(-ret));
        return ret;
    }
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, size);
    LLVMFuzzerTestOneInput(data, size);
    free(data);
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs the directory's files in name order, so a run is the same everywhere. */
static int run_directory(const char *path, unsigned *count)
{
    DIR *dir = opendir(path);
    if (!dir) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -errno;
    }
    char **names = NULL;
    size_t used = 0, capacity = 0;
    int ret = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        if (used == capacity) {
            size_t grown = capacity ? capacity * 2 : 64;
            char **bigger = realloc(names, grown * sizeof(*names));
            if (!bigger) {
                ret = -ENOMEM;
                break;
            }
            names = bigger;
            capacity = grown;
        }
        size_t length = strlen(path) + strlen(entry->d_name) + 2;
        names[used] = malloc(length);
        if (!names[used]) {
            ret = -ENOMEM;
            break;
        }
        snprintf(names[used], length, "%s/%s", path, entry->d_name);
        used++;
    }
    closedir(dir);
    if (ret == 0 && used)
        qsort(names, used, sizeof(*names), compare_names);
    for (size_t i = 0; i < used; i++) {
        struct stat st;
        if (ret == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
            ret = run_file(names[i]);
            (*count)++;
        }
        free(names[i]);
    }
    free(names);
    if (ret < 0)
        fprintf(stderr, "replay: %s: %s\n", path, strerror(-ret));
    return ret;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
        return 2;
    }
    unsigned count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        int ret;
        if (S_ISDIR(st.st_mode)) {
            ret = run_directory(argv[i], &count);
        } else {
            ret = run_file(argv[i]);
            count++;
        }
        if (ret < 0)
            return 1;
    }
    if (count == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    fprintf(stderr, "replay: %u inputs ran cleanly\n", count);
    return 0;
}
