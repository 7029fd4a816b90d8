/*
 * pidfile: the file init scripts and tests read lunad's process id from.
 */
#ifndef LUNA_SERVER_PIDFILE_H
#define LUNA_SERVER_PIDFILE_H

/* Write our pid to path; -errno on failure (nothing left behind). */
int pidfile_write(const char *path);
void pidfile_remove(const char *path);

#endif
