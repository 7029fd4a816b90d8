/* Value parsers: listen addresses, sizes, booleans, worker counts. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "config/config_internal.h"

static void expect_address(const char *text, const char *host, const char *port)
{
    struct listen_address address;
    int ret = listen_address_parse(text, "10809", &address);
    cr_assert_eq(ret, 0, "'%s' should parse", text);
    cr_expect_str_eq(address.host, host, "host of '%s'", text);
    cr_expect_str_eq(address.port, port, "port of '%s'", text);
    listen_address_clear(&address);
    cr_expect_null(address.host);
}

static void expect_bad_address(const char *text)
{
    struct listen_address address = {0};
    cr_expect_eq(listen_address_parse(text, "10809", &address), -EINVAL, "'%s' should fail", text);
    cr_expect_null(address.host, "'%s' must leave the output alone", text);
}

Test(listen_address, accepted_forms)
{
    expect_address("127.0.0.1:10809", "127.0.0.1", "10809");
    expect_address("[::1]:10809", "::1", "10809");
    expect_address("localhost:10809", "localhost", "10809");
    expect_address(":10809", "", "10809");
    expect_address("10.0.0.1", "10.0.0.1", "10809");
    expect_address("*:10809", "*", "10809");
    expect_address("[::1]", "::1", "10809");
    expect_address("[::]:2000", "::", "2000");
    expect_address("[fe80::1%eth0]:2000", "fe80::1%eth0", "2000");
    expect_address("::1", "::1", "10809");
    expect_address("0.0.0.0:0", "0.0.0.0", "0");
    expect_address("host.example.com:nbd", "host.example.com", "nbd");
    expect_address("127.0.0.1:65535", "127.0.0.1", "65535");
}

Test(listen_address, default_port)
{
    struct listen_address address;
    cr_assert_eq(listen_address_parse("10.0.0.1", "4242", &address), 0);
    cr_expect_str_eq(address.port, "4242");
    listen_address_clear(&address);
    /* NULL: the NBD port. */
    cr_assert_eq(listen_address_parse("10.0.0.1", NULL, &address), 0);
    cr_expect_str_eq(address.port, "10809");
    listen_address_clear(&address);
}

Test(listen_address, rejected_forms)
{
    expect_bad_address("");
    expect_bad_address("127.0.0.1:");
    expect_bad_address("127.0.0.1:65536");
    expect_bad_address("127.0.0.1:-1");
    expect_bad_address("127.0.0.1:10809x");
    expect_bad_address("127.0.0.1:100000");
    expect_bad_address("[::1");
    expect_bad_address("[::1]10809");
    expect_bad_address("[::1]:");
    expect_bad_address("[127.0.0.1]:10809");
    expect_bad_address("[]:10809");
    expect_bad_address("[fe80::1%]:1");
    expect_bad_address("bad host:10809");
    expect_bad_address("a/b:10809");
    expect_bad_address("1::2::3");
    expect_bad_address("host:por t");
}

Test(listen_address, reason_explains)
{
    struct listen_address address;
    char *reason = NULL;
    cr_assert_eq(listen_address_parse_reason("[::1", NULL, &address, &reason), -EINVAL);
    cr_expect_str_eq(reason, "invalid address '[::1' (missing ']')");
    free(reason);
}

static uint64_t size_of(const char *text)
{
    uint64_t size = 0;
    char *reason = NULL;
    int ret = config_parse_size(text, &size, &reason);
    cr_assert_eq(ret, 0, "'%s': %s", text, reason ? reason : "");
    cr_assert_null(reason);
    return size;
}

static void expect_bad_size(const char *text)
{
    uint64_t size = 77;
    char *reason = NULL;
    cr_expect_eq(config_parse_size(text, &size, &reason), -EINVAL, "'%s' should fail", text);
    cr_expect_not_null(reason);
    cr_expect_eq(size, 77, "'%s' must leave the output alone", text);
    free(reason);
}

Test(size, suffixes)
{
    cr_expect_eq(size_of("1G"), 1073741824ull);
    cr_expect_eq(size_of("1g"), 1073741824ull);
    cr_expect_eq(size_of("1GB"), 1073741824ull);
    cr_expect_eq(size_of("1GiB"), 1073741824ull);
    cr_expect_eq(size_of("512"), 512ull);
    cr_expect_eq(size_of("4K"), 4096ull);
    cr_expect_eq(size_of("4KiB"), 4096ull);
    cr_expect_eq(size_of("3M"), 3ull << 20);
    cr_expect_eq(size_of("2T"), 2ull << 40);
    cr_expect_eq(size_of("16777215T"), 16777215ull << 40);
    cr_expect_eq(size_of("18446744073709551615"), UINT64_MAX);
}

Test(size, garbage_negative_and_overflow)
{
    expect_bad_size("");
    expect_bad_size("G");
    expect_bad_size("-1");
    expect_bad_size("-1G");
    expect_bad_size("+1G");
    expect_bad_size(" 1G");
    expect_bad_size("1 G");
    expect_bad_size("1.5G");
    expect_bad_size("1P");
    expect_bad_size("1Gx");
    expect_bad_size("1GiBs");
    expect_bad_size("0x10");
    expect_bad_size("0");
    expect_bad_size("16777216T");
    expect_bad_size("18446744073709551616");
    expect_bad_size("99999999999999999999999");
}

Test(values, booleans)
{
    static const char *const yes[] = {"on", "yes", "true", "1", "ON", "True"};
    static const char *const no[] = {"off", "no", "false", "0", "OFF", "No"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        bool value = false;
        char *reason = NULL;
        cr_expect_eq(config_parse_bool(yes[i], &value, &reason), 0);
        cr_expect(value, "%s", yes[i]);
        value = true;
        cr_expect_eq(config_parse_bool(no[i], &value, &reason), 0);
        cr_expect_not(value, "%s", no[i]);
    }
    bool value = true;
    char *reason = NULL;
    cr_expect_eq(config_parse_bool("2", &value, &reason), -EINVAL);
    cr_expect(value, "unchanged on error");
    free(reason);
}

Test(values, workers)
{
    unsigned workers = 99;
    char *reason = NULL;
    cr_expect_eq(config_parse_workers("0", &workers, &reason), 0);
    cr_expect_eq(workers, 0);
    cr_expect_eq(config_parse_workers("256", &workers, &reason), 0);
    cr_expect_eq(workers, 256);
    static const char *const bad[] = {"257", "-1", "", "1.0", "abc", "99999999999999999999", " 1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(config_parse_workers(bad[i], &workers, &reason), -EINVAL, "'%s'", bad[i]);
        free(reason);
        reason = NULL;
    }
    cr_expect_eq(workers, 256, "unchanged on error");
}

Test(values, export_option_names)
{
    cr_expect_eq(export_option_lookup("create_size"), EXPORT_OPTION_CREATE_SIZE);
    cr_expect_eq(export_option_lookup("create-size"), EXPORT_OPTION_CREATE_SIZE);
    cr_expect_eq(export_option_lookup("cache"), EXPORT_OPTION_CACHE);
    cr_expect_eq(export_option_lookup("Cache"), -1);
    cr_expect_eq(export_option_lookup("caches"), -1);
    cr_expect_eq(export_option_lookup("a-very-long-key-name-that-does-not-fit-anywhere"), -1);
}
