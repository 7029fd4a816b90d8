/*
 * lunavm: a KVM virtual machine monitor for x86-64 Linux guests whose
 * disks are luna's (files, qcow2 images, NBD exports, iSCSI LUNs).
 * main parses the command line and hands over to machine_run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "vmm/machine.h"
#include "vmm/vm_options.h"

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
        status = machine_run(&options);
    vm_options_clear(&options);
    return status;
}
