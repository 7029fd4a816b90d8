#include "block/closing.h"

#include <pthread.h>
#include <stdlib.h>

struct closing_file {
    dev_t dev;
    ino_t ino;
    unsigned count;
    struct closing_file *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ended = PTHREAD_COND_INITIALIZER;
static struct closing_file *files;

static struct closing_file **find(dev_t dev, ino_t ino)
{
    struct closing_file **link = &files;
    while (*link && ((*link)->dev != dev || (*link)->ino != ino))
        link = &(*link)->next;
    return link;
}

void closing_begin(dev_t dev, ino_t ino)
{
    pthread_mutex_lock(&lock);
    struct closing_file **link = find(dev, ino);
    if (*link) {
        (*link)->count++;
    } else {
        struct closing_file *file = malloc(sizeof(*file));
        /* Without memory the close goes unrecorded: a reopen then fails as busy, nothing worse. */
        if (file) {
            *file = (struct closing_file){.dev = dev, .ino = ino, .count = 1, .next = NULL};
            *link = file;
        }
    }
    pthread_mutex_unlock(&lock);
}

void closing_end(dev_t dev, ino_t ino)
{
    pthread_mutex_lock(&lock);
    struct closing_file **link = find(dev, ino);
    if (*link && --(*link)->count == 0) {
        struct closing_file *file = *link;
        *link = file->next;
        free(file);
        pthread_cond_broadcast(&ended);
    }
    pthread_mutex_unlock(&lock);
}

bool closing_wait(dev_t dev, ino_t ino)
{
    pthread_mutex_lock(&lock);
    bool waited = false;
    while (*find(dev, ino)) {
        waited = true;
        pthread_cond_wait(&ended, &lock);
    }
    pthread_mutex_unlock(&lock);
    return waited;
}
