/* The human monitor's commands over a fake VM. */
#include <criterion/criterion.h>
#include <string.h>

#include "vmm/monitor.h"
#include "vmm/monitor_commands.h"

static bool running = true;
static bool quit_requested;

static bool fake_running(void *opaque)
{
    (void)opaque;
    return running;
}

static void fake_stop(void *opaque)
{
    (void)opaque;
    running = false;
}

static void fake_cont(void *opaque)
{
    (void)opaque;
    running = true;
}

static void fake_quit(void *opaque)
{
    (void)opaque;
    quit_requested = true;
}

static int fake_thread_id(void *opaque, unsigned index)
{
    (void)opaque;
    return 1000 + (int)index;
}

static void fake_drive(void *opaque, unsigned index, struct monitor_drive_info *info)
{
    (void)opaque;
    *info = (struct monitor_drive_info){index ? "data" : "root", index ? "nbd://h/d" : "/srv/root.qcow2",
                                        index ? "nbd" : "qcow2", "writeback", index == 1};
}

static const struct monitor_target target = {fake_running, fake_stop, fake_cont, fake_quit, 2, fake_thread_id,
                                             2, fake_drive, NULL};

static char reply[4096];

static enum monitor_result run(const char *line)
{
    reply[0] = '\0';
    return monitor_execute(&target, line, reply, sizeof(reply));
}

Test(vmm_monitor, status_stop_cont)
{
    running = true;
    run("info status");
    cr_assert_str_eq(reply, "VM status: running\n");
    run("stop");
    cr_assert_str_eq(reply, "");
    run("  info   status  ");
    cr_assert_str_eq(reply, "VM status: paused\n");
    run("c");
    cr_assert(running);
}

Test(vmm_monitor, info_block_and_cpus)
{
    run("info block");
    cr_assert(strstr(reply, "root: /srv/root.qcow2 (qcow2)\n"), "%s", reply);
    cr_assert(strstr(reply, "data: nbd://h/d (nbd, read-only)\n"), "%s", reply);
    cr_assert(strstr(reply, "Cache mode:       writeback"), "%s", reply);
    run("info cpus");
    cr_assert_str_eq(reply, "* CPU #0: thread_id=1000\n  CPU #1: thread_id=1001\n");
}

Test(vmm_monitor, quit_unknown_and_empty)
{
    cr_assert_eq(run(""), MONITOR_CONTINUE);
    cr_assert_str_eq(reply, "");
    run("frobnicate now");
    cr_assert_str_eq(reply, "unknown command: 'frobnicate'\n");
    run("info");
    cr_assert(strstr(reply, "info: unknown or missing item"), "%s", reply);
    run("help");
    cr_assert(strstr(reply, "info status"));
    quit_requested = false;
    cr_assert_eq(run("quit"), MONITOR_CLOSE);
    cr_assert(quit_requested);
}

Test(vmm_monitor, socket_specs)
{
    char *message = NULL;
    cr_assert_eq(monitor_check_spec("unix:/run/vm1.sock,server,nowait", &message), 0);
    cr_assert_eq(monitor_check_spec("unix:/run/vm1.sock,server=on,wait=off", &message), 0);
    cr_assert_eq(monitor_check_spec("none", &message), 0);
    cr_assert_lt(monitor_check_spec("stdio", &message), 0);
    cr_assert(strstr(message, "unix:PATH,server,nowait"), "%s", message);
    cr_assert_lt(monitor_check_spec("unix:/run/vm1.sock,server", &message), 0);
    cr_assert(strstr(message, "nowait"), "%s", message);
    cr_assert_lt(monitor_check_spec("unix:/x,server,nowait,telnet", &message), 0);
    cr_assert(strstr(message, "telnet"), "%s", message);
    free(message);
}
