/* Command line: flags alone, flags over a file, --help/--version, and every error. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

#define FIXTURE(name) LUNA_CONFIG_FIXTURES "/" name

static struct lunad_config config;
static char *message;

static void setup(void)
{
    lunad_config_init(&config);
    message = NULL;
    unsetenv("LISTEN_FDS");
}

static void teardown(void)
{
    lunad_config_clear(&config);
    free(message);
}

TestSuite(cli, .init = setup, .fini = teardown);

/* Parse {"lunad", args..., NULL}. */
#define PARSE(...) parse((char *[]){"lunad", __VA_ARGS__, NULL})
#define PARSE_NOTHING() parse((char *[]){"lunad", NULL})

static int parse(char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    free(message);
    message = NULL;
    return lunad_cli_parse(argc, argv, &config, &message);
}

static void expect_failure(int ret, const char *expected)
{
    cr_expect_lt(ret, 0, "should fail with: %s", expected);
    cr_assert_not_null(message, "a failure must come with a message");
    cr_expect(strstr(message, expected), "'%s' not in '%s'", expected, message);
    cr_expect_eq(config.export_count, 0, "a failed parse leaves the config untouched");
}

static char *read_stdout(void)
{
    fflush(stdout);
    FILE *captured = cr_get_redirected_stdout();
    static char buffer[8192];
    size_t n = fread(buffer, 1, sizeof(buffer) - 1, captured);
    buffer[n] = '\0';
    return buffer;
}

Test(cli, no_arguments_is_embedded_default)
{
    cr_assert_eq(PARSE_NOTHING(), LUNAD_CLI_RUN, "%s", message ? message : "");
    cr_expect_null(message);
    cr_expect_str_eq(config.source, "embedded default");
    cr_assert_eq(config.export_count, 1);
    cr_expect_str_eq(config.exports[0].name, "demo");
    cr_expect_str_eq(config.exports[0].bdev.path, "var/demo.img");
    cr_expect_eq(config.exports[0].bdev.create_size, 1ull << 30);
    cr_assert_eq(config.nbd_listen_count, 1);
    cr_expect_str_eq(config.nbd_listen[0].host, "127.0.0.1");
    cr_expect_str_eq(config.nbd_listen[0].port, "10809");
}

Test(cli, help, .init = cr_redirect_stdout)
{
    setup();
    cr_assert_eq(PARSE("--help"), LUNAD_CLI_EXIT_OK);
    char *out = read_stdout();
    cr_expect(strstr(out, "Usage: lunad"), "%s", out);
    cr_expect(strstr(out, "--export NAME=PATH"), "%s", out);
    cr_expect(strstr(out, "--check-config FILE"), "%s", out);
    cr_expect_eq(config.export_count, 0, "--help configures nothing");
}

Test(cli, short_help_wins_over_later_errors, .init = cr_redirect_stdout)
{
    setup();
    cr_assert_eq(PARSE("-h", "--bogus"), LUNAD_CLI_EXIT_OK);
    cr_expect(strstr(read_stdout(), "Usage: lunad"));
}

Test(cli, version, .init = cr_redirect_stdout)
{
    setup();
    cr_assert_eq(PARSE("--version"), LUNAD_CLI_EXIT_OK);
    cr_expect_str_eq(read_stdout(), "lunad " LUNA_VERSION "\n");
}

Test(cli, short_version, .init = cr_redirect_stdout)
{
    setup();
    cr_assert_eq(PARSE("-V"), LUNAD_CLI_EXIT_OK);
    cr_expect_str_eq(read_stdout(), "lunad " LUNA_VERSION "\n");
}

Test(cli, export_alone_listens_on_loopback)
{
    cr_assert_eq(PARSE("--export", "disk=/srv/disk.img"), LUNAD_CLI_RUN, "%s", message);
    cr_expect_str_eq(config.source, "command line");
    cr_assert_eq(config.export_count, 1);
    cr_expect_str_eq(config.exports[0].name, "disk");
    cr_expect_str_eq(config.exports[0].bdev.path, "/srv/disk.img");
    cr_expect_not(config.exports[0].bdev.readonly);
    cr_assert_eq(config.nbd_listen_count, 1);
    cr_expect_str_eq(config.nbd_listen[0].host, "127.0.0.1");
    cr_expect_str_eq(config.nbd_listen[0].port, "10809");
    cr_expect_eq(config.unix_socket_count, 0);
}

Test(cli, every_flag)
{
    int ret = PARSE("--nbd", "0.0.0.0:10810", "--nbd=[::]:10811", "--unix", "/tmp/a.sock",
                    "--unix", "b.sock", "--workers", "3", "--log-level", "debug", "--pidfile",
                    "lunad.pid", "--export",
                    "a=a.img,format=raw,readonly=on,cache=none,aio=threads,discard=ignore,"
                    "description=disk A,create-size=2G",
                    "--export", "b=/dev/vg/b,format=host_device,cache=directsync,aio=io_uring,"
                                "discard=unmap,readonly=off,create_size=1M");
    /* create_size on a host_device is refused: check the message, then the good variant. */
    expect_failure(ret, "--export b: create_size: only raw image files");

    ret = PARSE("--nbd", "0.0.0.0:10810", "--nbd=[::]:10811", "--unix", "/tmp/a.sock", "--unix",
                "b.sock", "--workers", "3", "--log-level", "debug", "--pidfile", "lunad.pid",
                "--export",
                "a=a.img,format=raw,readonly=on,cache=none,aio=threads,discard=ignore,"
                "description=disk A,create-size=2G",
                "--export", "b=/dev/vg/b,format=host_device,cache=directsync,aio=io_uring,"
                            "discard=unmap,readonly=off");
    cr_assert_eq(ret, LUNAD_CLI_RUN, "%s", message);
    cr_assert_eq(config.nbd_listen_count, 2);
    cr_expect_str_eq(config.nbd_listen[0].host, "0.0.0.0");
    cr_expect_str_eq(config.nbd_listen[0].port, "10810");
    cr_expect_str_eq(config.nbd_listen[1].host, "::");
    cr_assert_eq(config.unix_socket_count, 2);
    cr_expect_str_eq(config.unix_sockets[1], "b.sock");
    cr_expect_eq(config.workers, 3);
    cr_expect_eq(config.log_level, LOG_LEVEL_DEBUG);
    cr_expect_str_eq(config.pidfile, "lunad.pid");
    cr_assert_eq(config.export_count, 2);
    const struct export_config *a = &config.exports[0];
    cr_expect_str_eq(a->bdev.path, "a.img");
    cr_expect_eq(a->bdev.format, BDEV_FORMAT_RAW);
    cr_expect(a->bdev.readonly);
    cr_expect_eq(a->bdev.cache, BDEV_CACHE_NONE);
    cr_expect_eq(a->bdev.aio, BDEV_AIO_THREADS);
    cr_expect_not(a->bdev.discard);
    cr_expect_str_eq(a->description, "disk A");
    cr_expect(a->bdev.create_size_set);
    cr_expect_eq(a->bdev.create_size, 2ull << 30);
    const struct export_config *b = &config.exports[1];
    cr_expect_eq(b->bdev.format, BDEV_FORMAT_HOST_DEVICE);
    cr_expect_eq(b->bdev.cache, BDEV_CACHE_DIRECTSYNC);
    cr_expect_eq(b->bdev.aio, BDEV_AIO_IO_URING);
    cr_expect(b->bdev.discard);
    cr_expect_not(b->bdev.create_size_set);
}

Test(cli, escaped_commas)
{
    cr_assert_eq(PARSE("--export", "x=/srv/a,,b.img,description=one,, two,,,cache=unsafe"),
                 LUNAD_CLI_RUN, "%s", message);
    cr_expect_str_eq(config.exports[0].bdev.path, "/srv/a,b.img");
    cr_expect_str_eq(config.exports[0].description, "one, two,");
    cr_expect_eq(config.exports[0].bdev.cache, BDEV_CACHE_UNSAFE);
}

Test(cli, unix_only_means_no_tcp)
{
    cr_assert_eq(PARSE("--unix", "/tmp/l.sock", "--export", "x=x.img"), LUNAD_CLI_RUN, "%s",
                 message);
    cr_expect_eq(config.nbd_listen_count, 0);
    cr_expect_eq(config.unix_socket_count, 1);
}

Test(cli, nbd_alone_overrides_embedded_default_listener)
{
    cr_assert_eq(PARSE("--nbd", ":10900"), LUNAD_CLI_RUN, "%s", message);
    cr_expect_str_eq(config.source, "embedded default");
    cr_assert_eq(config.nbd_listen_count, 1);
    cr_expect_str_eq(config.nbd_listen[0].host, "");
    cr_expect_str_eq(config.nbd_listen[0].port, "10900");
    cr_assert_eq(config.export_count, 1);
    cr_expect_str_eq(config.exports[0].name, "demo");
}

Test(cli, config_file)
{
    cr_assert_eq(PARSE("--config", FIXTURE("all-keys.ini")), LUNAD_CLI_RUN, "%s", message);
    cr_expect_str_eq(config.source, FIXTURE("all-keys.ini"));
    cr_expect_eq(config.export_count, 3);
    cr_expect_eq(config.nbd_listen_count, 3);
    cr_expect_eq(config.workers, 4);
}

Test(cli, flags_override_file_in_any_order)
{
    cr_assert_eq(PARSE("--nbd", "127.0.0.9:1234", "--workers", "1", "--config",
                       FIXTURE("all-keys.ini"), "--export", "extra=extra.img", "--log-level",
                       "error", "--pidfile", "other.pid"),
                 LUNAD_CLI_RUN, "%s", message);
    /* --nbd replaces all three nbd_listen keys; unix_socket keys stay. */
    cr_assert_eq(config.nbd_listen_count, 1);
    cr_expect_str_eq(config.nbd_listen[0].host, "127.0.0.9");
    cr_expect_str_eq(config.nbd_listen[0].port, "1234");
    cr_expect_eq(config.unix_socket_count, 2);
    cr_expect_eq(config.workers, 1);
    cr_expect_eq(config.log_level, LOG_LEVEL_ERROR);
    cr_expect_str_eq(config.pidfile, "other.pid");
    cr_assert_eq(config.export_count, 4);
    cr_expect_str_eq(config.exports[0].name, "alpha");
    cr_expect_str_eq(config.exports[3].name, "extra");
}

Test(cli, unix_flag_replaces_only_unix_sockets)
{
    cr_assert_eq(PARSE("--config", FIXTURE("all-keys.ini"), "--unix", "/tmp/only.sock"),
                 LUNAD_CLI_RUN, "%s", message);
    cr_expect_eq(config.nbd_listen_count, 3);
    cr_assert_eq(config.unix_socket_count, 1);
    cr_expect_str_eq(config.unix_sockets[0], "/tmp/only.sock");
}

Test(cli, export_over_file_without_listener_gets_loopback)
{
    cr_assert_eq(PARSE("--config", FIXTURE("no-listener.ini"), "--export", "more=more.img"),
                 LUNAD_CLI_RUN, "%s", message);
    cr_expect_eq(config.export_count, 2);
    cr_assert_eq(config.nbd_listen_count, 1);
    cr_expect_str_eq(config.nbd_listen[0].host, "127.0.0.1");
}

Test(cli, check_config)
{
    cr_assert_eq(PARSE("--check-config", FIXTURE("all-keys.ini")), LUNAD_CLI_CHECK, "%s", message);
    cr_expect_eq(config.export_count, 3);
}

Test(cli, check_config_reports_file_errors)
{
    expect_failure(PARSE("--check-config", FIXTURE("bad-cache.ini")),
                   "bad-cache.ini:12: [export demo] cache: unknown value 'fast'");
    expect_failure(PARSE("--check-config", FIXTURE("no-export.ini")), "no-export.ini: no export");
    expect_failure(PARSE("--check-config", FIXTURE("missing.ini")),
                   "missing.ini: cannot open: No such file or directory");
    cr_expect_eq(PARSE("--check-config", FIXTURE("missing.ini")), -ENOENT);
}

Test(cli, duplicate_exports)
{
    expect_failure(PARSE("--config", FIXTURE("all-keys.ini"), "--export", "beta=x.img"),
                   "--export beta: duplicate export name (already defined in ");
    expect_failure(PARSE("--export", "a=1", "--export", "a=2"), "--export a: duplicate export name");
}

Test(cli, bad_export_flags)
{
    expect_failure(PARSE("--export", "noequals"), "--export 'noequals': expected NAME=PATH");
    expect_failure(PARSE("--export", "=x.img"), "--export '=x.img': an export needs a name");
    expect_failure(PARSE("--export", "a="), "--export a: path: empty value");
    expect_failure(PARSE("--export", "a=x,cache=fast"),
                   "--export a: cache: unknown value 'fast' (expected writeback, writethrough, "
                   "none, directsync, unsafe)");
    expect_failure(PARSE("--export", "a=x,readonly"), "--export a: 'readonly': expected key=value");
    expect_failure(PARSE("--export", "a=x,readonly="), "--export a: readonly: empty value");
    expect_failure(PARSE("--export", "a=x,speed=9"), "--export a: speed: unknown key");
    expect_failure(PARSE("--export", "a=x,cache=none,cache=none"), "--export a: cache: given twice");
    expect_failure(PARSE("--export", "a=x,path=y"), "--export a: path: given twice");
    expect_failure(PARSE("--export", "a=x,create-size=lots"), "--export a: create-size: invalid size");
    expect_failure(PARSE("--export", "a=x,format=qed"), "--export a: format: unknown value 'qed'");
    expect_failure(PARSE("--export", "a=nbd://h/e,reconnect-timeout=0"),
                   "--export a: reconnect-timeout: invalid value '0' (expected seconds, 1 to 86400)");
    expect_failure(PARSE("--export", "a=x,lvm-devices=/dev/sdb"),
                   "--export a: lvm_devices: only LVM volumes (format lvm, or qcow2 inside one) are read from");
    expect_failure(PARSE("--export", "a=x,aio=posix"), "--export a: aio: unknown value 'posix'");
    expect_failure(PARSE("--export", "a=x,discard=yes"), "--export a: discard: unknown value 'yes'");
}

Test(cli, bad_server_flags)
{
    expect_failure(PARSE("--nbd", "1.2.3.4:99999"), "--nbd: invalid address '1.2.3.4:99999'");
    expect_failure(PARSE("--nbd", ""), "--nbd: empty value");
    expect_failure(PARSE("--workers", "many"), "--workers: invalid value 'many'");
    expect_failure(PARSE("--workers", "300"), "--workers: invalid value '300'");
    expect_failure(PARSE("--log-level", "chatty"), "--log-level: unknown value 'chatty'");
    expect_failure(PARSE("--unix", ""), "--unix: empty value");
}

Test(cli, bad_usage)
{
    expect_failure(PARSE("--bogus"), "unknown option '--bogus'");
    expect_failure(PARSE("-x"), "unknown option '-x'");
    expect_failure(PARSE("--nbd"), "option '--nbd' needs a value");
    expect_failure(PARSE("--help=please"), "option '--help=please' takes no value");
    expect_failure(PARSE("stray"), "unexpected argument 'stray'");
    expect_failure(PARSE("--export", "a=b", "stray"), "unexpected argument 'stray'");
    expect_failure(PARSE("--config", "a.ini", "--check-config", "b.ini"),
                   "--check-config: a configuration file was already given (--config a.ini)");
    cr_expect_eq(PARSE("--bogus"), -EINVAL);
}

Test(cli, failure_keeps_previous_config)
{
    cr_assert_eq(PARSE("--export", "keep=keep.img"), LUNAD_CLI_RUN, "%s", message);
    cr_assert_lt(PARSE("--export", "new=new.img,cache=bad"), 0);
    cr_assert_eq(config.export_count, 1);
    cr_expect_str_eq(config.exports[0].name, "keep");
}

Test(cli, parse_twice_like_a_reload)
{
    char *argv[] = {"lunad", "--export", "a=a.img", "--nbd", ":1", NULL};
    for (int i = 0; i < 2; i++) {
        free(message);
        message = NULL;
        cr_assert_eq(lunad_cli_parse(5, argv, &config, &message), LUNAD_CLI_RUN, "%s", message);
        cr_assert_eq(config.export_count, 1, "round %d", i);
        cr_assert_eq(config.nbd_listen_count, 1, "round %d", i);
    }
    /* argv is not reordered, so a reload sees the same command line. */
    cr_expect_str_eq(argv[1], "--export");
    cr_expect_str_eq(argv[2], "a=a.img");
}

Test(cli, null_message_pointer_is_allowed)
{
    char *argv[] = {"lunad", "--bogus", NULL};
    cr_expect_eq(lunad_cli_parse(2, argv, &config, NULL), -EINVAL);
}

Test(cli, admin_socket)
{
    cr_assert_eq(PARSE("--export", "a=a.img"), LUNAD_CLI_RUN, "%s", message);
    cr_expect_null(config.admin_socket, "no admin socket by default");
    lunad_config_clear(&config);
    cr_assert_eq(PARSE("--export", "a=a.img", "--admin-socket", "/run/luna/admin.sock"), LUNAD_CLI_RUN, "%s",
                 message);
    cr_expect_str_eq(config.admin_socket, "/run/luna/admin.sock");
    lunad_config_clear(&config);
    /* The flag replaces the file's key. */
    cr_assert_eq(PARSE("--config", FIXTURE("all-keys.ini"), "--admin-socket=flag.sock"), LUNAD_CLI_RUN, "%s",
                 message);
    cr_expect_str_eq(config.admin_socket, "flag.sock");
}

Test(cli, bad_admin_socket)
{
    char path[200];
    memset(path, 'p', sizeof(path) - 1);
    path[sizeof(path) - 1] = '\0';
    expect_failure(PARSE("--export", "a=a.img", "--admin-socket", path), "--admin-socket: path 'ppp");
    expect_failure(PARSE("--export", "a=a.img", "--admin-socket", ""), "--admin-socket: empty value");
    expect_failure(PARSE("--export", "a=a.img", "--unix", "x.sock", "--admin-socket", "x.sock"),
                   "admin_socket: x.sock is also an NBD unix_socket");
}

Test(cli, help_mentions_admin_socket, .init = cr_redirect_stdout)
{
    cr_assert_eq(PARSE("--help"), LUNAD_CLI_EXIT_OK);
    cr_expect(strstr(read_stdout(), "--admin-socket PATH"));
}

Test(cli, target_flag_listens_for_iscsi_on_loopback)
{
    int ret = PARSE("--export", "a=/tmp/a.img", "--export", "b=/tmp/b.img", "--target",
                    "iqn.2026-12.org.example:t=a,b");
    cr_assert_eq(ret, LUNAD_CLI_RUN, "%s", message ? message : "");
    cr_assert_eq(config.nbd_listen_count, 0, "--target without --nbd: iSCSI only");
    cr_assert_eq(config.iscsi_listen_count, 1);
    cr_assert_str_eq(config.iscsi_listen[0].host, "127.0.0.1");
    cr_assert_str_eq(config.iscsi_listen[0].port, "3260");
    cr_assert_eq(config.target_count, 1);
    cr_assert_eq(config.targets[0].lun_count, 2);
    cr_assert_eq(config.targets[0].luns[1].number, 1);
    cr_assert_str_eq(config.targets[0].luns[1].export_name, "b");
}

Test(cli, iscsi_and_nbd_together)
{
    int ret = PARSE("--export", "a=/tmp/a.img", "--nbd", "127.0.0.1:10809", "--iscsi", "[::1]:3261", "--target",
                    "iqn.2026-12.org.example:t=a");
    cr_assert_eq(ret, LUNAD_CLI_RUN, "%s", message ? message : "");
    cr_assert_eq(config.nbd_listen_count, 1);
    cr_assert_eq(config.iscsi_listen_count, 1);
    cr_assert_str_eq(config.iscsi_listen[0].port, "3261");
}

Test(cli, target_flag_errors)
{
    expect_failure(PARSE("--export", "a=/tmp/a.img", "--target", "iqn.2026-12.org.example:t"),
                   "--target: expected IQN=EXPORT[,EXPORT...]");
    expect_failure(PARSE("--export", "a=/tmp/a.img", "--target", "iqn.2026-12.org.example:t=a,nosuch"),
                   "command line: [target iqn.2026-12.org.example:t] lun.1: no export 'nosuch'");
}
