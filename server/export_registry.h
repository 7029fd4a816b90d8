/*
 * export_registry: the export table currently being served.
 *
 * New connections take a reference to the current table; a reload (SIGHUP)
 * builds a new table from the new configuration and publishes it.  Exports
 * whose configuration did not change are carried over as the same objects,
 * so their open file stays shared between old and new clients (one cache
 * per export is what makes NBD multi-conn safe).  Clients of removed or
 * changed exports keep the old objects until they disconnect.
 */
#ifndef LUNA_SERVER_EXPORT_REGISTRY_H
#define LUNA_SERVER_EXPORT_REGISTRY_H

#include <stddef.h>

#include "block/export.h"

struct export_registry;

struct export_registry *export_registry_new(void);
void export_registry_free(struct export_registry *registry);

/*
 * Build a table from configs (reusing unchanged exports of the current
 * table) and make it current.  On failure nothing changes and a malloc'd
 * message names the export that failed.
 */
int export_registry_publish(struct export_registry *registry,
                            const struct export_config *configs, size_t count,
                            char **error_message);

/* A new reference to the current table (never NULL after a publish). */
struct export_table *export_registry_current(struct export_registry *registry);

/*
 * Take the export called name out of service while something (an overlay
 * commit) changes its image: a table without it is published, and every
 * later publish (a reload) leaves it out, until export_registry_restore.
 * The export object itself lives on while old tables or clients hold it.
 * 0, -ENOENT when the current table has no such export, -EBUSY when it is
 * withheld already, -ENOMEM.
 */
int export_registry_withhold(struct export_registry *registry, const char *name);

/* Let name be published again; the caller publishes (a fresh export object then opens). */
void export_registry_restore(struct export_registry *registry, const char *name);

#endif
