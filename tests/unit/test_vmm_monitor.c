/* The human monitor's commands over a fake VM. */
#include <criterion/criterion.h>
#include <string.h>

#include "vmm/console.h"
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

static unsigned powerdown_presses;

static void fake_powerdown(void *opaque)
{
    (void)opaque;
    powerdown_presses++;
}

static unsigned resets;

static void fake_reset(void *opaque)
{
    (void)opaque;
    resets++;
}

static const struct monitor_target target = {
    .running = fake_running,
    .stop = fake_stop,
    .cont = fake_cont,
    .quit = fake_quit,
    .powerdown = fake_powerdown,
    .reset = fake_reset,
    .cpu_count = 2,
    .cpu_thread_id = fake_thread_id,
    .drive_count = 2,
    .drive = fake_drive,
};

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

Test(vmm_monitor, system_powerdown_presses_the_button_once)
{
    powerdown_presses = 0;
    cr_assert_eq(run("system_powerdown"), MONITOR_CONTINUE);
    cr_assert_str_eq(reply, "");
    cr_assert_eq(powerdown_presses, 1);
    run("system_powerdow");
    cr_assert_str_eq(reply, "unknown command: 'system_powerdow'\n");
    cr_assert_eq(powerdown_presses, 1);
    run("help");
    cr_assert(strstr(reply, "system_powerdown --"), "%s", reply);
}

Test(vmm_monitor, system_reset_resets_once_and_keeps_the_monitor)
{
    resets = 0;
    powerdown_presses = 0;
    cr_assert_eq(run("system_reset"), MONITOR_CONTINUE);
    cr_assert_str_eq(reply, "");
    cr_assert_eq(resets, 1);
    cr_assert_eq(powerdown_presses, 0);
    run("help");
    cr_assert(strstr(reply, "system_reset -- reset the system"), "%s", reply);
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
    cr_assert_eq(monitor_check_spec("stdio", &message), 0);
    cr_assert(monitor_spec_on_console("stdio"));
    cr_assert(monitor_spec_on_console(NULL), "no -monitor: on the console, as QEMU's -nographic");
    cr_assert(!monitor_spec_on_console("none"));
    cr_assert(!monitor_spec_on_console("unix:/run/vm1.sock,server,nowait"));
    cr_assert_lt(monitor_check_spec("vc", &message), 0);
    cr_assert(strstr(message, "-monitor vc"), "%s", message);
    free(message);
    message = NULL;
    cr_assert_lt(monitor_check_spec("unix:/run/vm1.sock,server", &message), 0);
    cr_assert(strstr(message, "nowait"), "%s", message);
    cr_assert_lt(monitor_check_spec("unix:/x,server,nowait,telnet", &message), 0);
    cr_assert(strstr(message, "telnet"), "%s", message);
    free(message);
}

/* The monitor multiplexed on the console: Ctrl-A c, echo, line editing, commands. */
static char console_output[4096];

static void capture_output(void *opaque, const char *text, size_t length)
{
    (void)opaque;
    size_t used = strlen(console_output);
    cr_assert_lt(used + length, sizeof(console_output));
    memcpy(console_output + used, text, length);
    console_output[used + length] = '\0';
}

static size_t type(struct console *console, const char *keys, uint8_t *to_guest, bool *quit)
{
    return console_filter_input(console, (const uint8_t *)keys, strlen(keys), to_guest, quit);
}

Test(vmm_monitor, console_mux_switches_with_ctrl_a_c)
{
    struct console console = {.monitor_target = &target, .monitor_output = capture_output};
    uint8_t to_guest[256];
    bool quit;
    console_output[0] = '\0';
    cr_assert_eq(type(&console, "ls\r", to_guest, &quit), 3, "the guest has the keyboard first");
    cr_assert_eq(type(&console, "\x01" "c", to_guest, &quit), 0);
    cr_assert(strstr(console_output, "monitor - type 'help'"), "%s", console_output);
    cr_assert(strstr(console_output, "(qemu) "), "%s", console_output);
    powerdown_presses = 0;
    console_output[0] = '\0';
    cr_assert_eq(type(&console, "system_powerdownX\x7f\r", to_guest, &quit), 0, "nothing reaches the guest");
    cr_assert(!quit);
    cr_assert_eq(powerdown_presses, 1, "the backspace erased the X");
    cr_assert(strstr(console_output, "system_powerdownX\b \b\n(qemu) "), "echo, erase, prompt: '%s'",
              console_output);
    console_output[0] = '\0';
    running = true;
    type(&console, "info status\n", to_guest, &quit);
    cr_assert(strstr(console_output, "VM status: running\n(qemu) "), "%s", console_output);
    cr_assert_eq(type(&console, "\x01" "cdf\r", to_guest, &quit), 3, "Ctrl-A c gives the keyboard back");
    cr_assert_eq(memcmp(to_guest, "df\r", 3), 0);
    console_output[0] = '\0';
    type(&console, "\x01" "c", to_guest, &quit);
    cr_assert_str_eq(console_output, "\n(qemu) ", "greeted once");
    type(&console, "\x01" "x", to_guest, &quit);
    cr_assert(quit, "Ctrl-A x ends the VM from the monitor too");
}

Test(vmm_monitor, console_without_monitor_passes_ctrl_a_c_to_the_guest)
{
    struct console console = {.monitor_output = capture_output};
    uint8_t to_guest[16];
    bool quit;
    cr_assert_eq(type(&console, "\x01" "c", to_guest, &quit), 2);
    cr_assert_eq(memcmp(to_guest, "\x01" "c", 2), 0);
}

Test(vmm_monitor, console_monitor_drops_an_overlong_line)
{
    struct console console = {.monitor_target = &target, .monitor_output = capture_output};
    uint8_t to_guest[16];
    bool quit;
    type(&console, "\x01" "c", to_guest, &quit);
    console_output[0] = '\0';
    quit_requested = false;
    char line[CONSOLE_MONITOR_LINE_MAX + 8];
    memset(line, ' ', sizeof(line) - 3);
    memcpy(line + sizeof(line) - 3, "q\r", 3); /* "q" past the limit must not run */
    console_filter_input(&console, (const uint8_t *)line, sizeof(line), to_guest, &quit);
    cr_assert(!quit_requested);
    cr_assert(strstr(console_output, "line too long"), "%s", console_output);
    type(&console, "q\r", to_guest, &quit);
    cr_assert(quit_requested, "the next line runs");
}
