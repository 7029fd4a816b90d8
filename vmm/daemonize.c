#include "vmm/daemonize.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/error_message.h"

static int redirect_to_null(int target)
{
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0)
        return -errno;
    int ret = dup2(null_fd, target) < 0 ? -errno : 0;
    close(null_fd);
    return ret;
}

static int wait_for_child(int read_fd, pid_t child)
{
    char byte;
    ssize_t got;
    do
        got = read(read_fd, &byte, 1);
    while (got < 0 && errno == EINTR);
    close(read_fd);
    if (got == 1)
        return 0;
    /* The pipe closed without the byte: the child failed, and logged why on our shared stderr. */
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    return 1;
}

int daemonize_start(int *ready_fd, int *parent_status, char **error_message)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return error_message_set(error_message, -errno, "-daemonize: pipe: %s", strerror(errno));
    pid_t child = fork();
    if (child < 0) {
        int error = errno;
        close(fds[0]);
        close(fds[1]);
        return error_message_set(error_message, -error, "-daemonize: fork: %s", strerror(error));
    }
    if (child > 0) {
        close(fds[1]);
        *parent_status = wait_for_child(fds[0], child);
        return 1;
    }
    close(fds[0]);
    *ready_fd = fds[1];
    /* A new session: no controlling terminal, so the terminal's hang-up does not reach the VM. */
    if (setsid() < 0 || redirect_to_null(STDIN_FILENO) < 0 || redirect_to_null(STDOUT_FILENO) < 0) {
        int error = errno;
        close(fds[1]);
        return error_message_set(error_message, -error, "-daemonize: cannot detach: %s", strerror(error));
    }
    return 0;
}

void daemonize_ready(int ready_fd)
{
    /* Errors from here on have nowhere to go, as with QEMU (which logs only with -D). */
    (void)redirect_to_null(STDERR_FILENO);
    /* Not pinning the mount lunavm was started in (every path is resolved or open by now). */
    int ignored = chdir("/");
    (void)ignored;
    char byte = 0;
    while (write(ready_fd, &byte, 1) < 0 && errno == EINTR)
        ;
    close(ready_fd);
}
