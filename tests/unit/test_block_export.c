/* Exports and export tables: open, read-only, reference counts, lookup, config equality. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/export.h"
#include "block/threadpool.h"
#include "test_block_util.h"

static void fini(void) { threadpool_shutdown(); }
TestSuite(export, .fini = fini);

static struct export_config make_config(const char *name, const char *path, bool readonly)
{
    struct export_config config = {.name = (char *)name, .description = NULL};
    bdev_options_init(&config.bdev);
    config.bdev.path = path;
    config.bdev.readonly = readonly;
    return config;
}

Test(export, open_ref_unref_and_table)
{
    char *path = temp_file(65536);
    struct export_config config = make_config("disk", path, false);
    struct export *export;
    char *message = NULL;
    cr_assert_eq(export_open(&config, &export, &message), 0);
    cr_assert_eq(export->refcount, 1);
    cr_assert(!export->readonly);
    cr_assert_eq(export->bdev->size, 65536);
    cr_assert_str_eq(export->config.name, "disk");
    cr_assert_neq(export->config.name, config.name, "config must be copied");
    cr_assert_neq(export->config.bdev.path, config.bdev.path);

    struct export_table *table = export_table_new();
    cr_assert_not_null(table);
    cr_assert_eq(export_table_add(table, export_ref(export)), 0);
    cr_assert_eq(export->refcount, 2);
    cr_assert_eq(export_table_find(table, "disk"), export);
    cr_assert_null(export_table_find(table, "other"));

    struct export_table *held = export_table_ref(table);
    export_table_unref(table);
    cr_assert_eq(export->refcount, 2, "table still referenced");
    export_table_unref(held);
    cr_assert_eq(export->refcount, 1);
    export_unref(export);
    unlink(path);
    free(path);
}

Test(export, readonly_from_config)
{
    char *path = temp_file(4096);
    struct export_config config = make_config("ro", path, true);
    struct export *export;
    cr_assert_eq(export_open(&config, &export, NULL), 0);
    cr_assert(export->readonly);
    cr_assert(bdev_is_read_only(export->bdev));
    export_unref(export);
    unlink(path);
    free(path);
}

Test(export, open_failure_reports_the_path)
{
    struct export_config config = make_config("missing", "/tmp/luna-no-such-file.img", false);
    struct export *export = NULL;
    char *message = NULL;
    cr_assert_eq(export_open(&config, &export, &message), -ENOENT);
    cr_assert_not_null(message);
    cr_assert_not_null(strstr(message, "/tmp/luna-no-such-file.img"));
    free(message);
}

Test(export, config_copy_equal_clear)
{
    struct export_config a = make_config("a", "/x.img", false);
    a.description = "desc";
    struct export_config b;
    cr_assert_eq(export_config_copy(&b, &a), 0);
    cr_assert(export_config_equal(&a, &b));
    b.bdev.cache = BDEV_CACHE_NONE;
    cr_assert(!export_config_equal(&a, &b));
    b.bdev.cache = a.bdev.cache;
    free(b.description);
    b.description = NULL;
    cr_assert(!export_config_equal(&a, &b));
    b.description = strdup("desc");
    cr_assert(export_config_equal(&a, &b));
    b.bdev.readonly = true;
    cr_assert(!export_config_equal(&a, &b));
    export_config_clear(&b);
    cr_assert_null(b.name);
    cr_assert_null(b.bdev.path);
}
