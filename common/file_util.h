/*
 * file_util: blocking file helpers for code off the event loops (image
 * creation and checking, opening exports): whole-range positioned reads
 * and writes (short transfers resumed, EINTR retried) and mkdir -p.
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

#endif
