/*
 * lunavm: a KVM virtual machine monitor for x86-64 Linux guests whose
 * disks are luna's (files, qcow2 images, NBD exports, iSCSI LUNs).
 * main parses the command line and hands over to machine_run.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/daemonize.h"
#include "vmm/machine.h"
#include "vmm/pidfile.h"
#include "vmm/vm_options.h"

static void vm_running(void *opaque)
{
    int *ready_fd = opaque;
    daemonize_ready(*ready_fd);
    *ready_fd = -1;
}

/* In the process that runs the VM (the child with -daemonize): the pid file around machine_run. */
static int run_vm(const struct vm_options *options, int ready_fd)
{
    char *pidfile_path = NULL;
    int pidfile_fd = -1;
    if (options->pidfile) {
        char *message = NULL;
        pidfile_path = pidfile_absolute_path(options->pidfile);
        pidfile_fd = pidfile_path ? pidfile_create(pidfile_path, &message) : -ENOMEM;
        if (pidfile_fd < 0) {
            log_error("%s", message ? message : strerror(-pidfile_fd));
            free(message);
            free(pidfile_path);
            return 1;
        }
    }
    int status = machine_run(options, ready_fd >= 0 ? vm_running : NULL, &ready_fd);
    if (pidfile_fd >= 0)
        pidfile_remove(pidfile_path, pidfile_fd);
    free(pidfile_path);
    if (ready_fd >= 0) /* failed before running: the parent sees the pipe close and exits 1 */
        close(ready_fd);
    return status;
}

static int run(const struct vm_options *options)
{
    int ready_fd = -1;
    if (options->daemonize) {
        int parent_status = 1;
        char *message = NULL;
        int ret = daemonize_start(&ready_fd, &parent_status, &message);
        if (ret < 0) {
            log_error("%s", message ? message : strerror(-ret));
            free(message);
            return 1;
        }
        if (ret == 1)
            return parent_status;
    }
    return run_vm(options, ready_fd);
}

int main(int argc, char **argv)
{
    log_set_program("lunavm");
    struct vm_options options;
    char *message = NULL;
    if (vm_options_parse(argc, argv, &options, &message) < 0) {
        log_error("%s", message ? message : "invalid command line");
        fprintf(stderr, "Try 'lunavm --help' for more information.\n");
        free(message);
        vm_options_clear(&options);
        return 2;
    }
    int status = 0;
    if (options.help)
        vm_options_usage();
    else if (options.version)
        printf("lunavm version %s\n", LUNA_VERSION);
    else
        status = run(&options);
    vm_options_clear(&options);
    return status;
}
