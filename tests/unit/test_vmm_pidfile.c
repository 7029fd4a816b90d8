/* -pidfile (vmm/pidfile.h): the pid written, the lock refusing a second owner, removal. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmm/pidfile.h"

static char directory[] = "/tmp/test-vmm-pidfile-XXXXXX";
static char path[128];

static void setup(void)
{
    cr_assert_not_null(mkdtemp(directory));
    snprintf(path, sizeof(path), "%s/vm.pid", directory);
}

static void teardown(void)
{
    unlink(path);
    rmdir(directory);
}

TestSuite(vmm_pidfile, .init = setup, .fini = teardown);

Test(vmm_pidfile, holds_the_pid_locks_and_is_removed)
{
    FILE *stale = fopen(path, "w");
    cr_assert_not_null(stale);
    fputs("99999999 a stale, longer pid file\n", stale);
    fclose(stale);
    char *message = NULL;
    int fd = pidfile_create(path, &message);
    cr_assert_geq(fd, 0, "%s", message ? message : "");
    char text[64] = {0}, expected[32];
    FILE *file = fopen(path, "r");
    cr_assert_not_null(file);
    cr_assert_gt(fread(text, 1, sizeof(text) - 1, file), 0);
    fclose(file);
    snprintf(expected, sizeof(expected), "%ld\n", (long)getpid());
    cr_assert_str_eq(text, expected, "the stale content is replaced");

    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) { /* another process (the fopen/fclose above must not have dropped the lock) */
        char *child_message = NULL;
        int ret = pidfile_create(path, &child_message);
        _exit(ret == -EBUSY && child_message && strstr(child_message, path) ? 0 : 1);
    }
    int status;
    cr_assert_eq(waitpid(child, &status, 0), child);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a second owner is refused with -EBUSY (status %#x)", status);

    pidfile_remove(path, fd);
    cr_assert_eq(access(path, F_OK), -1, "removed at exit");
}

Test(vmm_pidfile, unwritable_place_is_an_error_naming_it)
{
    char *message = NULL;
    cr_assert_lt(pidfile_create("/nonexistent-dir/vm.pid", &message), 0);
    cr_assert(message && strstr(message, "-pidfile /nonexistent-dir/vm.pid"), "%s", message ? message : "");
    free(message);
}
