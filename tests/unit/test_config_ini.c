/* INI configuration: good files, every kind of bad input, and the messages' locations. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

#define FIXTURE(name) LUNA_CONFIG_FIXTURES "/" name

static struct lunad_config config;

static void setup(void)
{
    lunad_config_init(&config);
}

static void teardown(void)
{
    lunad_config_clear(&config);
}

TestSuite(config_ini, .init = setup, .fini = teardown);

/* Load text that must fail; returns the message (freed by the caller). */
static char *load_failure(const char *text)
{
    char *message = NULL;
    int ret = lunad_config_load_string(text, "test.ini", &config, &message);
    cr_assert_lt(ret, 0, "expected failure for:\n%s", text);
    cr_assert_not_null(message);
    cr_assert_eq(config.export_count, 0, "a failed load leaves the config untouched");
    return message;
}

static void expect_error(const char *text, const char *expected)
{
    char *message = load_failure(text);
    cr_expect_str_eq(message, expected);
    free(message);
}

/* The message contains every fragment. */
static void expect_error_contains(const char *text, const char *first, const char *second)
{
    char *message = load_failure(text);
    cr_expect(strstr(message, first), "'%s' not in '%s'", first, message);
    if (second)
        cr_expect(strstr(message, second), "'%s' not in '%s'", second, message);
    free(message);
}

Test(config_ini, all_keys_file)
{
    char *message = NULL;
    int ret = lunad_config_load_file(FIXTURE("all-keys.ini"), &config, &message);
    cr_assert_eq(ret, 0, "%s", message ? message : "");
    cr_assert_null(message);
    cr_assert_eq(lunad_config_validate(&config, &message), 0, "%s", message ? message : "");

    cr_assert_str_eq(config.source, FIXTURE("all-keys.ini"));
    cr_assert_eq(config.nbd_listen_count, 3);
    cr_expect_str_eq(config.nbd_listen[0].host, "127.0.0.1");
    cr_expect_str_eq(config.nbd_listen[0].port, "10809");
    cr_expect_str_eq(config.nbd_listen[1].host, "::1");
    cr_expect_str_eq(config.nbd_listen[1].port, "10810");
    cr_expect_str_eq(config.nbd_listen[2].host, "");
    cr_expect_str_eq(config.nbd_listen[2].port, "10811");
    cr_assert_eq(config.unix_socket_count, 2);
    cr_expect_str_eq(config.unix_sockets[0], "/run/luna/nbd.sock");
    cr_expect_str_eq(config.unix_sockets[1], "relative.sock");
    cr_expect_eq(config.workers, 4);
    cr_expect_eq(config.log_level, LOG_LEVEL_DEBUG);
    cr_expect_str_eq(config.pidfile, "/run/luna/lunad.pid");
    cr_expect_str_eq(config.admin_socket, "/run/luna/admin.sock");

    cr_assert_eq(config.export_count, 3);
    const struct export_config *alpha = &config.exports[0];
    cr_expect_str_eq(alpha->name, "alpha");
    cr_expect_str_eq(alpha->bdev.path, "/srv/alpha.img");
    cr_expect_eq(alpha->bdev.format, BDEV_FORMAT_RAW);
    cr_expect(alpha->bdev.readonly);
    cr_expect_eq(alpha->bdev.cache, BDEV_CACHE_NONE);
    cr_expect_eq(alpha->bdev.aio, BDEV_AIO_THREADS);
    cr_expect_not(alpha->bdev.discard);
    cr_expect_str_eq(alpha->description, "Alpha disk, read-only");
    cr_expect(alpha->bdev.create_size_set);
    cr_expect_eq(alpha->bdev.create_size, 512ull << 20);

    const struct export_config *beta = &config.exports[1];
    cr_expect_str_eq(beta->name, "beta");
    cr_expect_str_eq(beta->bdev.path, "images/beta.img");
    cr_expect_eq(beta->bdev.format, BDEV_FORMAT_HOST_DEVICE);
    cr_expect_eq(beta->bdev.cache, BDEV_CACHE_DIRECTSYNC);
    cr_expect_eq(beta->bdev.aio, BDEV_AIO_IO_URING);
    cr_expect(beta->bdev.discard);
    cr_expect_not(beta->bdev.readonly);
    cr_expect_null(beta->description);
    cr_expect_not(beta->bdev.create_size_set);

    const struct export_config *gamma = &config.exports[2];
    cr_expect_str_eq(gamma->name, "gamma");
    cr_expect_str_eq(gamma->bdev.path, "/dev/vg0/gamma");
    cr_expect_eq(gamma->bdev.format, BDEV_FORMAT_AUTO);
    cr_expect_eq(gamma->bdev.cache, BDEV_CACHE_UNSAFE);
    cr_expect_eq(gamma->bdev.aio, BDEV_AIO_DEFAULT);
    cr_expect_not(gamma->bdev.discard);
}

Test(config_ini, defaults_for_unset_keys)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_string("[server]\nunix_socket = s.sock\n[export x]\npath = x.img\n",
                                          "t", &config, &message),
                 0);
    cr_expect_eq(config.workers, 0);
    cr_expect_eq(config.log_level, LOG_LEVEL_INFO);
    cr_expect_null(config.pidfile);
    cr_expect_eq(config.nbd_listen_count, 0);
    struct bdev_options defaults;
    bdev_options_init(&defaults);
    const struct bdev_options *bdev = &config.exports[0].bdev;
    cr_expect_eq(bdev->format, defaults.format);
    cr_expect_eq(bdev->cache, defaults.cache);
    cr_expect_eq(bdev->aio, defaults.aio);
    cr_expect_eq(bdev->readonly, defaults.readonly);
    cr_expect_eq(bdev->discard, defaults.discard);
    cr_expect_not(bdev->create_size_set);
    cr_expect_eq(lunad_config_validate(&config, &message), 0);
}

Test(config_ini, crlf_line_endings)
{
    char *message = NULL;
    int ret = lunad_config_load_file(FIXTURE("crlf.ini"), &config, &message);
    cr_assert_eq(ret, 0, "%s", message ? message : "");
    cr_assert_eq(config.export_count, 1);
    cr_expect_str_eq(config.exports[0].name, "crlf");
    cr_expect_str_eq(config.exports[0].bdev.path, "crlf.img");
    cr_expect_eq(config.exports[0].bdev.cache, BDEV_CACHE_WRITETHROUGH);
    cr_expect_str_eq(config.nbd_listen[0].host, "0.0.0.0");
}

Test(config_ini, server_section_may_repeat)
{
    char *message = NULL;
    const char *text = "[server]\nnbd_listen = 127.0.0.1:1\n[export a]\npath = a\n"
                       "[server]\nnbd_listen = 127.0.0.2:2\nworkers = 3\n";
    cr_assert_eq(lunad_config_load_string(text, "t", &config, &message), 0, "%s", message);
    cr_assert_eq(config.nbd_listen_count, 2);
    cr_expect_str_eq(config.nbd_listen[1].host, "127.0.0.2");
    cr_expect_eq(config.workers, 3);
}

Test(config_ini, embedded_default_parses_and_validates)
{
    char *message = NULL;
    int ret = lunad_config_load_string(lunad_config_default_text(), "embedded default", &config,
                                       &message);
    cr_assert_eq(ret, 0, "%s", message ? message : "");
    cr_assert_eq(lunad_config_validate(&config, &message), 0, "%s", message ? message : "");
    cr_assert_str_eq(config.source, "embedded default");
    cr_assert_eq(config.nbd_listen_count, 1);
    cr_expect_str_eq(config.nbd_listen[0].host, "127.0.0.1");
    cr_expect_str_eq(config.nbd_listen[0].port, "10809");
    cr_assert_eq(config.export_count, 1);
    cr_expect_str_eq(config.exports[0].name, "demo");
    cr_expect_str_eq(config.exports[0].bdev.path, "var/demo.img");
    cr_expect(config.exports[0].bdev.create_size_set);
    cr_expect_eq(config.exports[0].bdev.create_size, 1073741824ull);
    cr_expect_str_eq(config.exports[0].description, "luna demo disk (1 GiB, sparse)");
}

Test(config_ini, load_replaces_previous_contents)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_string("[export a]\npath = a\n", "first", &config, &message), 0);
    cr_assert_eq(lunad_config_load_string("[export b]\npath = b\n", "second", &config, &message), 0);
    cr_assert_eq(config.export_count, 1);
    cr_expect_str_eq(config.exports[0].name, "b");
    cr_expect_str_eq(config.source, "second");
}

Test(config_ini, failed_load_keeps_previous_contents)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_string("[export a]\npath = a\n", "first", &config, &message), 0);
    cr_assert_lt(lunad_config_load_string("[export b]\npath = b\nbogus = 1\n", "second", &config,
                                          &message),
                 0);
    free(message);
    cr_assert_eq(config.export_count, 1);
    cr_expect_str_eq(config.exports[0].name, "a");
    cr_expect_str_eq(config.source, "first");
}

/* ---- errors: each names file, line, section and key ---- */

Test(config_ini, bad_cache_value_message)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_file(FIXTURE("bad-cache.ini"), &config, &message), -EINVAL);
    char expected[512];
    snprintf(expected, sizeof(expected),
             "%s:12: [export demo] cache: unknown value 'fast' (expected writeback, writethrough, "
             "none, directsync, unsafe)",
             FIXTURE("bad-cache.ini"));
    cr_expect_str_eq(message, expected);
    free(message);
}

Test(config_ini, unknown_key_file)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_file(FIXTURE("unknown-key.ini"), &config, &message), -EINVAL);
    cr_expect(strstr(message, "unknown-key.ini:6: [export demo] cahce: unknown key (expected path, "),
              "%s", message);
    free(message);
}

Test(config_ini, missing_path_points_at_section)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_file(FIXTURE("missing-path.ini"), &config, &message), -EINVAL);
    cr_expect(strstr(message, "missing-path.ini:7: [export nopath] path: missing"), "%s", message);
    free(message);
}

Test(config_ini, duplicate_export_file)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_file(FIXTURE("duplicate-export.ini"), &config, &message), -EINVAL);
    cr_expect(strstr(message, "duplicate-export.ini:10: [export demo]: duplicate export name (first "
                              "defined on line 4)"),
              "%s", message);
    free(message);
}

Test(config_ini, missing_file)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_file(FIXTURE("does-not-exist.ini"), &config, &message), -ENOENT);
    cr_expect(strstr(message, "does-not-exist.ini: cannot open: No such file or directory"), "%s",
              message);
    free(message);
}

Test(config_ini, no_export_fails_validation)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_file(FIXTURE("no-export.ini"), &config, &message), 0);
    cr_assert_eq(lunad_config_validate(&config, &message), -EINVAL);
    cr_expect(strstr(message, "no-export.ini: no export"), "%s", message);
    free(message);
}

Test(config_ini, no_listener_fails_validation)
{
    char *message = NULL;
    unsetenv("LISTEN_FDS");
    cr_assert_eq(lunad_config_load_file(FIXTURE("no-listener.ini"), &config, &message), 0);
    cr_expect_eq(config.log_level, LOG_LEVEL_WARN);
    cr_assert_eq(lunad_config_validate(&config, &message), -EINVAL);
    cr_expect(strstr(message, "no-listener.ini: no listener"), "%s", message);
    free(message);
}

Test(config_ini, no_listener_is_fine_with_socket_activation)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_file(FIXTURE("no-listener.ini"), &config, &message), 0);
    setenv("LISTEN_FDS", "1", 1);
    cr_expect_eq(lunad_config_validate(&config, &message), 0, "%s", message ? message : "");
    unsetenv("LISTEN_FDS");
}

Test(config_ini, socket_activation_for_another_process_does_not_count)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_file(FIXTURE("no-listener.ini"), &config, &message), 0);
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_PID", "1", 1); /* init's, not ours */
    cr_expect_eq(lunad_config_validate(&config, &message), -EINVAL);
    free(message);
    message = NULL;
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("LISTEN_PID", pid, 1);
    cr_expect_eq(lunad_config_validate(&config, &message), 0, "%s", message ? message : "");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
}

Test(config_ini, shipped_example_is_valid)
{
    char *message = NULL;
    int ret = lunad_config_load_file(LUNA_EXAMPLE_CONFIG, &config, &message);
    cr_assert_eq(ret, 0, "%s", message ? message : "");
    cr_assert_eq(lunad_config_validate(&config, &message), 0, "%s", message ? message : "");
    cr_expect_eq(config.nbd_listen_count, 2);
    cr_expect_eq(config.unix_socket_count, 1);
    cr_expect_eq(config.export_count, 5);
    cr_expect_eq(config.exports[3].bdev.format, BDEV_FORMAT_QCOW2);
    cr_expect_eq(config.exports[4].overlay, EXPORT_OVERLAY_PERSISTENT);
}

Test(config_ini, unknown_section)
{
    expect_error("[server]\nnbd_listen = :1\n\n[exprot demo]\npath = x\n",
                 "test.ini:4: [exprot demo]: unknown section (expected [server], [export NAME], [target IQN] or [discovery])");
    /* Reported even when the section holds no key at all. */
    expect_error("[export a]\npath = a\n[servers]\n",
                 "test.ini:3: [servers]: unknown section (expected [server], [export NAME], [target IQN] or [discovery])");
}

Test(config_ini, export_without_name)
{
    expect_error_contains("[export]\npath = x\n", "test.ini:1: [export]: an export needs a name",
                          NULL);
    expect_error_contains("[export   ]\npath = x\n", "test.ini:1: [export]:", NULL);
}

Test(config_ini, export_names_keep_inner_spaces)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_string("[export  my disk ]\npath = x\n", "t", &config, &message),
                 0, "%s", message);
    cr_expect_str_eq(config.exports[0].name, "my disk");
}

Test(config_ini, empty_export_section_is_missing_path)
{
    expect_error("[export a]\npath = a\n[export b]\n",
                 "test.ini:3: [export b] path: missing (every export needs a path)");
}

Test(config_ini, unknown_server_key)
{
    expect_error("[server]\nnbd_listen = :1\nthreads = 4\n",
                 "test.ini:3: [server] threads: unknown key (expected nbd_listen, iscsi_listen, "
                 "iscsi_ping_interval, unix_socket, workers, log_level, pidfile, admin_socket, state_dir)");
}

Test(config_ini, dashed_key_is_unknown_in_files)
{
    expect_error_contains("[export a]\npath = a\ncreate-size = 1G\n",
                          "test.ini:3: [export a] create-size: unknown key", NULL);
}

Test(config_ini, key_outside_section)
{
    expect_error("; comment\nworkers = 2\n[server]\n",
                 "test.ini:2: workers: key outside a section (put it under [server], "
                 "[export NAME] or [target IQN])");
}

Test(config_ini, empty_values)
{
    expect_error("[export a]\npath =\n", "test.ini:2: [export a] path: empty value");
    expect_error("[export a]\npath = a\ndescription = \"\"\n",
                 "test.ini:3: [export a] description: empty value");
    expect_error("[server]\nworkers = \n", "test.ini:2: [server] workers: empty value");
    expect_error("[server]\nnbd_listen=\n", "test.ini:2: [server] nbd_listen: empty value");
}

Test(config_ini, bad_values_name_line_section_key)
{
    expect_error("[export a]\npath = a\nformat = qed\n",
                 "test.ini:3: [export a] format: unknown value 'qed' (expected auto, raw, "
                 "host_device, qcow2, vmdk, vdi, vpc, lvm, nbd, iscsi)");
    expect_error("[export a]\npath = a\nreadonly = maybe\n",
                 "test.ini:3: [export a] readonly: unknown value 'maybe' (expected on, off, yes, "
                 "no, true, false, 1, 0)");
    expect_error("[export a]\npath = a\n\naio = libaio\n",
                 "test.ini:4: [export a] aio: unknown value 'libaio' (expected default, io_uring, "
                 "threads)");
    expect_error("[export a]\npath = a\ndiscard = maybe\n",
                 "test.ini:3: [export a] discard: unknown value 'maybe' (expected unmap, ignore, "
                 "on, off)");
    expect_error_contains("[export a]\npath = a\ncreate_size = 1X\n",
                          "test.ini:3: [export a] create_size: invalid size '1X'", NULL);
    expect_error_contains("[export a]\npath = a\ncreate_size = -1G\n",
                          "test.ini:3: [export a] create_size: invalid size '-1G'", NULL);
    expect_error_contains("[export a]\npath = a\ncreate_size = 99999999999T\n",
                          "test.ini:3: [export a] create_size: size '99999999999T' is too large",
                          NULL);
    expect_error("[server]\nworkers = 257\n",
                 "test.ini:2: [server] workers: invalid value '257' (expected 0 for one per CPU, "
                 "or 1 to 256)");
    expect_error_contains("[server]\nworkers = -1\n", "test.ini:2: [server] workers: invalid value",
                          NULL);
    expect_error_contains("[server]\nworkers = 2x\n", "test.ini:2: [server] workers: invalid value",
                          NULL);
    expect_error("[server]\nlog_level = loud\n",
                 "test.ini:2: [server] log_level: unknown value 'loud' (expected error, warn, info, "
                 "debug)");
    expect_error_contains("[server]\nnbd_listen = 127.0.0.1:99999\n",
                          "test.ini:2: [server] nbd_listen: invalid address '127.0.0.1:99999'",
                          "bad port");
    expect_error_contains("[server]\nunix_socket = /tmp/"
                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\n",
                          "test.ini:2: [server] unix_socket: path", "too long for a Unix socket");
}

Test(config_ini, non_repeatable_key_given_twice)
{
    expect_error("[export a]\npath = a\ncache = none\ncache = unsafe\n",
                 "test.ini:4: [export a] cache: given twice (first on line 3)");
    expect_error("[server]\nworkers = 1\n[export a]\npath = a\n[server]\nworkers = 2\n",
                 "test.ini:6: [server] workers: given twice (first on line 2)");
}

Test(config_ini, create_size_needs_a_raw_file)
{
    expect_error_contains("[export a]\npath = /dev/sdz\nformat = host_device\ncreate_size = 1G\n",
                          "test.ini:4: [export a] create_size: only raw image files", NULL);
}

Test(config_ini, l2_cache_size_is_for_qcow2)
{
    char *message = NULL;
    const char *text = "[export a]\npath = a.qcow2\nformat = qcow2\nl2_cache_size = 2M\n";
    cr_assert_eq(lunad_config_load_string(text, "test.ini", &config, &message), 0, "%s", message);
    cr_expect_eq(config.exports[0].bdev.l2_cache_size, 2ull << 20);
    lunad_config_clear(&config);
    lunad_config_init(&config);
    expect_error_contains("[export a]\npath = a\nl2_cache_size = 1M\n",
                          "test.ini:3: [export a] l2_cache_size: only qcow2 images have an L2 cache", NULL);
    expect_error_contains("[export a]\npath = a\nformat = qcow2\nl2_cache_size = lots\n",
                          "test.ini:4: [export a] l2_cache_size:", NULL);
}

Test(config_ini, overlay_modes)
{
    char *message = NULL;
    const char *text = "[export a]\npath = /srv/golden.img\noverlay = persistent:/var/lib/luna/overlays\n"
                       "[export b]\npath = /srv/golden.img\noverlay = ephemeral\n"
                       "[export c]\npath = /srv/golden.img\noverlay = ephemeral:/scratch\n";
    cr_assert_eq(lunad_config_load_string(text, "test.ini", &config, &message), 0, "%s", message);
    cr_expect_eq(config.exports[0].overlay, EXPORT_OVERLAY_PERSISTENT);
    cr_expect_str_eq(config.exports[0].overlay_dir, "/var/lib/luna/overlays");
    cr_expect_eq(config.exports[1].overlay, EXPORT_OVERLAY_EPHEMERAL);
    cr_expect_null(config.exports[1].overlay_dir);
    cr_expect_str_eq(config.exports[2].overlay_dir, "/scratch");
    lunad_config_clear(&config);
    lunad_config_init(&config);
    expect_error_contains("[export a]\npath = a\noverlay = persistent\n",
                          "test.ini:3: [export a] overlay: persistent overlays need a directory", NULL);
    expect_error_contains("[export a]\npath = a\noverlay = persistent:relative/dir\n",
                          "test.ini:3: [export a] overlay: the overlay directory must be an absolute path", NULL);
    expect_error_contains("[export a]\npath = a\noverlay = snapshot\n",
                          "test.ini:3: [export a] overlay: unknown value 'snapshot'", NULL);
    expect_error_contains("[export a]\npath = a\nreadonly = on\noverlay = ephemeral\n",
                          "[export a] overlay: clients write to their overlays", NULL);
}

Test(config_ini, syntax_errors)
{
    expect_error("[server]\nnbd_listen = :1\nthis line has no equals sign\n",
                 "test.ini:3: syntax error (expected [section], key = value or a comment)");
    expect_error("[server\nworkers = 1\n",
                 "test.ini:1: syntax error: section header without ']'");
    expect_error("[server] junk\n", "test.ini:1: syntax error: text after the section header");
}

Test(config_ini, first_error_wins)
{
    /* A syntax error on line 2 comes before a bad value on line 3. */
    expect_error("[export a]\ngarbage\ncache = fast\npath = a\n",
                 "test.ini:2: syntax error (expected [section], key = value or a comment)");
    /* A bad value on line 2 comes before a syntax error on line 3. */
    expect_error_contains("[export a]\ncache = fast\ngarbage\npath = a\n",
                          "test.ini:2: [export a] cache: unknown value 'fast'", NULL);
}

Test(config_ini, line_numbers_count_comments_and_blank_lines)
{
    expect_error_contains("; one\n\n# three\n\n[server]\n\n\nbogus = 1\n",
                          "test.ini:8: [server] bogus: unknown key", NULL);
}

Test(config_ini, overlong_line)
{
    char text[600];
    int n = snprintf(text, sizeof(text), "[export a]\npath = ");
    memset(text + n, 'p', 400);
    strcpy(text + n + 400, "\n");
    expect_error_contains(text, "test.ini:2: line too long", NULL);
}

Test(config_ini, long_section_title_is_not_truncated)
{
    /* inih keeps only 50 bytes of a section title; lunad must see all of it. */
    char text[400];
    char name[121];
    memset(name, 'n', 120);
    name[120] = '\0';
    snprintf(text, sizeof(text), "[export %s]\npath = a\n", name);
    char *message = NULL;
    cr_assert_eq(lunad_config_load_string(text, "t", &config, &message), 0, "%s", message);
    cr_expect_str_eq(config.exports[0].name, name);
}

Test(config_ini, nul_byte_is_rejected)
{
    char *message = NULL;
    char path[] = "/tmp/luna-config-test-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    static const char data[] = "[export a]\npath = a\0b\n";
    cr_assert_eq(write(fd, data, sizeof(data) - 1), (ssize_t)sizeof(data) - 1);
    close(fd);
    int ret = lunad_config_load_file(path, &config, &message);
    unlink(path);
    cr_assert_eq(ret, -EINVAL);
    cr_expect(strstr(message, ":2: binary data"), "%s", message);
    free(message);
}

Test(config_ini, validate_catches_programmatic_mistakes)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_string("[server]\nnbd_listen = :1\n[export a]\npath = a\n"
                                          "[export b]\npath = b\n",
                                          "t", &config, &message),
                 0);
    /* Rename b to a: only validate can see the duplicate now. */
    free(config.exports[1].name);
    config.exports[1].name = strdup("a");
    cr_assert_eq(lunad_config_validate(&config, &message), -EINVAL);
    cr_expect_str_eq(message, "t: export 'a' is defined twice");
    free(message);
    message = NULL;

    free((char *)config.exports[1].bdev.path);
    config.exports[1].bdev.path = NULL;
    cr_assert_eq(lunad_config_validate(&config, &message), -EINVAL);
    cr_expect(strstr(message, "t: [export a] path: missing"), "%s", message);
    free(message);
}

Test(config_ini, admin_socket)
{
    char *message = NULL;
    cr_assert_eq(lunad_config_load_string("[server]\nnbd_listen = :1\n[export a]\npath = a.img\n", "test.ini",
                                          &config, &message), 0, "%s", message);
    cr_expect_null(config.admin_socket, "no admin socket unless configured");
    lunad_config_clear(&config);
    cr_assert_eq(lunad_config_load_string("[server]\nnbd_listen = :1\nadmin_socket = /run/luna/admin.sock\n"
                                          "[export a]\npath = a.img\n", "test.ini", &config, &message), 0,
                 "%s", message);
    cr_expect_str_eq(config.admin_socket, "/run/luna/admin.sock");
    cr_assert_eq(lunad_config_validate(&config, &message), 0, "%s", message ? message : "");
}

Test(config_ini, bad_admin_socket)
{
    char long_path[200];
    memset(long_path, 'a', sizeof(long_path) - 1);
    long_path[sizeof(long_path) - 1] = '\0';
    char text[400];
    snprintf(text, sizeof(text), "[server]\nadmin_socket = /%.150s\n", long_path);
    expect_error_contains(text, "test.ini:2: [server] admin_socket: path '/", "is too long for a Unix socket");
    expect_error("[server]\nadmin_socket = a.sock\nadmin_socket = b.sock\n",
                 "test.ini:3: [server] admin_socket: given twice (first on line 2)");

    char *message = NULL;
    cr_assert_eq(lunad_config_load_string("[server]\nunix_socket = x.sock\nadmin_socket = x.sock\n"
                                          "[export a]\npath = a.img\n", "test.ini", &config, &message), 0,
                 "%s", message);
    cr_expect_eq(lunad_config_validate(&config, &message), -EINVAL);
    cr_expect_str_eq(message, "test.ini: admin_socket: x.sock is also an NBD unix_socket");
    free(message);
}

Test(config_ini, iscsi_targets)
{
    static const char text[] = "[server]\n"
                               "iscsi_listen = 127.0.0.1\n"
                               "iscsi_ping_interval = 5\n"
                               "iscsi_listen = [::1]:3261\n"
                               "[export a]\npath = /tmp/a.img\n"
                               "[export b]\npath = /tmp/b.img\n"
                               "[target iqn.2026-12.org.example:disks]\n"
                               "alias = two disks\n"
                               "lun.1 = b\n"
                               "lun.0 = a\n";
    char *message = NULL;
    int ret = lunad_config_load_string(text, "test.ini", &config, &message);
    cr_assert_eq(ret, 0, "%s", message ? message : "");
    cr_assert_eq(lunad_config_validate(&config, &message), 0, "%s", message ? message : "");
    cr_assert_eq(config.iscsi_listen_count, 2);
    cr_assert_eq(config.iscsi_ping_interval, 5);
    cr_assert_str_eq(config.iscsi_listen[0].port, "3260", "iSCSI's port by default");
    cr_assert_str_eq(config.iscsi_listen[1].host, "::1");
    cr_assert_eq(config.target_count, 1);
    const struct iscsi_target_config *target = &config.targets[0];
    cr_assert_str_eq(target->iqn, "iqn.2026-12.org.example:disks");
    cr_assert_str_eq(target->alias, "two disks");
    cr_assert_eq(target->lun_count, 2);
    cr_assert_eq(target->luns[0].number, 0, "LUNs in number order");
    cr_assert_str_eq(target->luns[0].export_name, "a");
    cr_assert_str_eq(target->luns[1].export_name, "b");
}

Test(config_ini, iscsi_target_errors)
{
    expect_error("[target iqn.Bad:Name]\n",
                 "test.ini:1: [target iqn.Bad:Name]: 'iqn.Bad:Name' is not an iSCSI name "
                 "(iqn.YYYY-MM.reversed.domain[:name], lower case)");
    expect_error("[target iqn.2026-12.org.example:t]\nlun.0 = a\nlun.0 = b\n",
                 "test.ini:3: [target iqn.2026-12.org.example:t] lun.0: LUN 0 is given twice");
    expect_error("[target iqn.2026-12.org.example:t]\nlun = a\n",
                 "test.ini:2: [target iqn.2026-12.org.example:t] lun: unknown key (expected lun.N, alias, initiators, chap_user, chap_secret, mutual_chap_user or mutual_chap_secret)");
    expect_error("[target iqn.2026-12.org.example:t]\n[target iqn.2026-12.org.example:t]\n",
                 "test.ini:2: [target iqn.2026-12.org.example:t]: target iqn.2026-12.org.example:t is defined twice");

    char *message = NULL;
    static const char missing_export[] = "[server]\niscsi_listen = 127.0.0.1\n[export a]\npath = /tmp/a\n"
                                         "[target iqn.2026-12.org.example:t]\nlun.0 = nosuch\n";
    cr_assert_eq(lunad_config_load_string(missing_export, "test.ini", &config, &message), 0);
    cr_assert_lt(lunad_config_validate(&config, &message), 0);
    cr_assert_str_eq(message, "test.ini: [target iqn.2026-12.org.example:t] lun.0: no export 'nosuch'");
    free(message);
}
