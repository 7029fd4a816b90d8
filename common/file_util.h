/*
 * file_util: blocking file helpers for code off the event loops (image
 * creation and checking, opening exports): whole-range positioned reads
 * and writes (short transfers resumed, EINTR retried), mkdir -p, and
 * replacing a small file so that a crash leaves the old one or the new one.
 */
#ifndef LUNA_COMMON_FILE_UTIL_H
#define LUNA_COMMON_FILE_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Read all of length at offset; bytes past the end of the file read as zeroes.  0 or -errno. */
int file_pread_full(int fd, void *buffer, size_t length, uint64_t offset);

/* Write all of length at offset.  0 or -errno. */
int file_pwrite_full(int fd, const void *buffer, size_t length, uint64_t offset);

/* mkdir -p: create path and its missing parents (mode 0755).  0 or -errno. */
int file_make_directories(const char *path);

/* fsync a directory, so the renames and unlinks done in it survive a crash.  0 or -errno. */
int file_sync_directory(const char *directory);

/*
 * Make path hold exactly data: written to "path.tmp", fsynced, renamed
 * over path, the directory fsynced.  0 or -errno (path unchanged, unless
 * only the directory's fsync failed).
 */
int file_replace_contents(const char *path, const void *data, size_t length);

/* unlink path (gone already is fine) and fsync its directory.  0 or -errno. */
int file_remove_durably(const char *path);

#endif
