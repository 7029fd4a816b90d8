/* luna-img's parsers: sizes as qemu-img reads them, -o key=value lists. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/img/img.h"

static uint64_t size_of(const char *text)
{
    uint64_t value = 0;
    cr_assert_eq(img_parse_size(text, &value), 0, "'%s' should parse", text);
    return value;
}

Test(img_size, plain_and_suffixes)
{
    cr_expect_eq(size_of("0"), 0);
    cr_expect_eq(size_of("1000"), 1000);
    cr_expect_eq(size_of("512b"), 512);
    cr_expect_eq(size_of("512B"), 512);
    cr_expect_eq(size_of("4k"), 4096);
    cr_expect_eq(size_of("4K"), 4096);
    cr_expect_eq(size_of("64M"), 64ull << 20);
    cr_expect_eq(size_of("1G"), 1ull << 30);
    cr_expect_eq(size_of("10g"), 10ull << 30);
    cr_expect_eq(size_of("2T"), 2ull << 40);
    cr_expect_eq(size_of("1P"), 1ull << 50);
    cr_expect_eq(size_of("7E"), 7ull << 60);
    cr_expect_eq(size_of("0x1000"), 4096);
}

Test(img_size, fractions)
{
    cr_expect_eq(size_of("1.5G"), 3ull << 29);
    cr_expect_eq(size_of("0.5k"), 512);
    uint64_t value;
    cr_expect_eq(img_parse_size("1.5", &value), -EINVAL, "a fraction needs a suffix");
    cr_expect_eq(img_parse_size("1.G", &value), -EINVAL);
}

Test(img_size, rejected)
{
    uint64_t value = 42;
    const char *bad[] = {"", "x", "12x", "-1", "1GG", "1 G", "G", "0x10k"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(img_parse_size(bad[i], &value), -EINVAL, "'%s' should be rejected", bad[i]);
    cr_expect_eq(img_parse_size("16E", &value), -ERANGE);
    cr_expect_eq(img_parse_size("99999999999999999999", &value), -ERANGE);
    cr_expect_eq(value, 42, "failures leave the output alone");
}

Test(img_bool, values)
{
    bool value;
    cr_expect(img_parse_bool("on", &value) == 0 && value);
    cr_expect(img_parse_bool("off", &value) == 0 && !value);
    cr_expect(img_parse_bool("true", &value) == 0 && value);
    cr_expect(img_parse_bool("no", &value) == 0 && !value);
    cr_expect_eq(img_parse_bool("maybe", &value), -EINVAL);
}

Test(img_options, lists_accumulate_and_last_wins)
{
    struct img_options list = {0};
    char *message = NULL;
    cr_assert_eq(img_options_parse(&list, "cluster_size=4k,compat=0.10", &message), 0);
    cr_assert_eq(img_options_parse(&list, "compat=1.1", &message), 0);
    cr_expect_eq(list.count, 3);
    cr_expect_str_eq(img_options_take(&list, "cluster_size"), "4k");
    cr_expect_str_eq(img_options_take(&list, "compat"), "1.1");
    cr_expect_null(img_options_take(&list, "missing"));
    cr_expect_null(img_options_unused(&list));
    cr_expect(!list.help);
    img_options_free(&list);
}

Test(img_options, escaped_commas_empty_values_and_unused)
{
    struct img_options list = {0};
    char *message = NULL;
    cr_assert_eq(img_options_parse(&list, "backing_file=a,,b.img,backing_fmt=,foo=bar", &message), 0);
    cr_expect_str_eq(img_options_take(&list, "backing_file"), "a,b.img");
    cr_expect_str_eq(img_options_take(&list, "backing_fmt"), "");
    cr_expect_str_eq(img_options_unused(&list), "foo");
    img_options_free(&list);
}

Test(img_options, help)
{
    struct img_options list = {0};
    char *message = NULL;
    cr_assert_eq(img_options_parse(&list, "help", &message), 0);
    cr_expect(list.help);
    img_options_free(&list);
    cr_assert_eq(img_options_parse(&list, "compat=v3,?", &message), 0);
    cr_expect(list.help);
    cr_expect_eq(list.count, 1);
    img_options_free(&list);
}

Test(img_options, malformed)
{
    struct img_options list = {0};
    char *message = NULL;
    cr_expect_eq(img_options_parse(&list, "compat", &message), -EINVAL);
    cr_expect_not_null(message);
    cr_expect(strstr(message, "compat") != NULL, "the message names the item: %s", message);
    free(message);
    message = NULL;
    cr_expect_eq(img_options_parse(&list, "=x", &message), -EINVAL);
    free(message);
    img_options_free(&list);
}
