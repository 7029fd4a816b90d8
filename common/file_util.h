/*
 * file_util: whole-range positioned reads and writes on a file descriptor,
 * for tool-side code that does plain blocking I/O (qcow2 create and check).
 * Short transfers are resumed and EINTR retried.
 */
#ifndef LUNA_COMMON_FILE_UTIL_H
#define LUNA_COMMON_FILE_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Read all of length at offset; bytes past the end of the file read as zeroes.  0 or -errno. */
int file_pread_full(int fd, void *buffer, size_t length, uint64_t offset);

/* Write all of length at offset.  0 or -errno. */
int file_pwrite_full(int fd, const void *buffer, size_t length, uint64_t offset);

#endif
