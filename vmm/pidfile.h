/*
 * pidfile: -pidfile FILE, as QEMU's: the file holds lunavm's process id
 * and a write lock (fcntl, open file description) for as long as lunavm runs, so a second lunavm
 * given the same file refuses to start instead of overwriting it; it is
 * removed at exit.
 */
#ifndef LUNA_VMM_PIDFILE_H
#define LUNA_VMM_PIDFILE_H

/* Create or take over path, lock it and write "PID\n".  The fd (>= 0), or -errno with a message. */
int pidfile_create(const char *path, char **error_message);

/* path made absolute against the working directory (-daemonize changes it).  Malloc'd; NULL: ENOMEM or no cwd. */
char *pidfile_absolute_path(const char *path);

/* Remove path and release the lock (fd from pidfile_create). */
void pidfile_remove(const char *path, int fd);

#endif
