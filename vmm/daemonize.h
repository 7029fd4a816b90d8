/*
 * daemonize: -daemonize, as QEMU's: lunavm forks before anything starts a
 * thread; the parent waits on a pipe and exits 0 once the child reports
 * the VM running (1 if the child fails first: its errors still reach the
 * terminal, since the child's stderr goes to /dev/null only when ready).
 * The child leaves the session (setsid) and reads and writes /dev/null.
 */
#ifndef LUNA_VMM_DAEMONIZE_H
#define LUNA_VMM_DAEMONIZE_H

/*
 * Fork.  In the child: 0 and *ready_fd (for daemonize_ready).  In the
 * parent, once the child is ready or gone: 1 and *parent_status, the
 * status main should return.  -errno with a message if it cannot fork.
 */
int daemonize_start(int *ready_fd, int *parent_status, char **error_message);

/* In the child, once the VM runs: stderr to /dev/null, chdir("/"), tell the parent. */
void daemonize_ready(int ready_fd);

#endif
