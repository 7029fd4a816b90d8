/*
 * lunad: the storage server's entry point.
 *
 * The main thread owns the configuration, the listening sockets and the
 * signals (SIGTERM/SIGINT: graceful stop; SIGHUP: reload); the workers own
 * the connections.  Start-up order matters for systemd: READY=1 is sent
 * only once every export is open and every socket listens, so a unit that
 * depends on lunad never races its start.
 */
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "block/aio.h"
#include "block/bdev.h"
#include "block/export.h"
#include "block/threadpool.h"
#include "common/log.h"
#include "config/config.h"
#include "server/admin.h"
#include "server/export_registry.h"
#include "server/listener.h"
#include "server/pidfile.h"
#include "server/iscsi_settings.h"
#include "server/worker.h"

/* How long SIGTERM waits for clients to finish their requests. */
#define SHUTDOWN_GRACE_SECONDS 30.0
#define MAX_WORKERS 256

struct lunad {
    int argc;
    char **argv;
    struct lunad_config config;
    struct export_registry *registry;
    struct worker *workers[MAX_WORKERS];
    unsigned worker_count;
    struct listener_set *listeners;
    struct iscsi_settings *iscsi; /* the targets and portals, fixed at start-up */
    struct admin *admin; /* NULL without admin_socket */
    struct ev_loop *loop;
    ev_signal sigterm, sigint, sighup;
};

static unsigned default_worker_count(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1)
        return 1;
    return cpus > MAX_WORKERS ? MAX_WORKERS : (unsigned)cpus;
}

/* Parse argv into config: the same path at start-up and on SIGHUP. */
static int load_config(int argc, char **argv, struct lunad_config *config, int *action)
{
    char *message = NULL;
    lunad_config_init(config);
    optind = 0; /* getopt restarts from scratch on reload */
    int ret = lunad_cli_parse(argc, argv, config, &message); /* also validates */
    if (ret < 0) {
        log_error("%s", message ? message : strerror(-ret));
        free(message);
        lunad_config_clear(config);
        return ret;
    }
    *action = ret;
    return 0;
}

static bool listeners_equal(const struct lunad_config *a, const struct lunad_config *b)
{
    if (a->nbd_listen_count != b->nbd_listen_count || a->unix_socket_count != b->unix_socket_count)
        return false;
    for (size_t i = 0; i < a->nbd_listen_count; i++)
        if (strcmp(a->nbd_listen[i].host, b->nbd_listen[i].host) != 0 ||
            strcmp(a->nbd_listen[i].port, b->nbd_listen[i].port) != 0)
            return false;
    for (size_t i = 0; i < a->unix_socket_count; i++)
        if (strcmp(a->unix_sockets[i], b->unix_sockets[i]) != 0)
            return false;
    return true;
}

/* SIGHUP: re-read the configuration; exports change, clients stay. */
static void reload(struct lunad *lunad)
{
    sd_notify(0, "RELOADING=1");
    log_info("SIGHUP: reloading configuration from %s", lunad->config.source);
    struct lunad_config fresh;
    int action;
    if (load_config(lunad->argc, lunad->argv, &fresh, &action) < 0) {
        log_error("reload failed; still serving the previous configuration");
        sd_notify(0, "READY=1");
        return;
    }
    char *message = NULL;
    if (export_registry_publish(lunad->registry, fresh.exports, fresh.export_count, &message) < 0) {
        log_error("reload failed: %s; still serving the previous configuration",
                  message ? message : "cannot open exports");
        free(message);
        lunad_config_clear(&fresh);
        sd_notify(0, "READY=1");
        return;
    }
    if (!listeners_equal(&lunad->config, &fresh))
        log_warn("reload: listener changes take effect only after a restart");
    if (fresh.workers != lunad->config.workers)
        log_warn("reload: a new worker count takes effect only after a restart");
    const char *admin_before = lunad->config.admin_socket, *admin_after = fresh.admin_socket;
    if ((admin_before || admin_after) && (!admin_before || !admin_after || strcmp(admin_before, admin_after) != 0))
        log_warn("reload: admin_socket changes take effect only after a restart");
    log_set_level(fresh.log_level);
    lunad_config_clear(&lunad->config);
    lunad->config = fresh;
    log_info("reload done: %zu export(s)", lunad->config.export_count);
    sd_notify(0, "READY=1");
}

static void signal_cb(struct ev_loop *loop, ev_signal *watcher, int revents)
{
    (void)revents;
    struct lunad *lunad = watcher->data;
    if (watcher->signum == SIGHUP) {
        reload(lunad);
        return;
    }
    log_info("%s: stopping (finishing requests in flight)", strsignal(watcher->signum));
    ev_break(loop, EVBREAK_ALL);
}

static int start_workers(struct lunad *lunad)
{
    unsigned count = lunad->config.workers ? lunad->config.workers : default_worker_count();
    if (count > MAX_WORKERS)
        count = MAX_WORKERS;
    /* Workers inherit a mask without our signals: only the main loop handles them. */
    sigset_t handled, previous;
    sigemptyset(&handled);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigaddset(&handled, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &handled, &previous);
    int ret = 0;
    for (unsigned i = 0; i < count && ret == 0; i++) {
        ret = worker_start(i, lunad->registry, &lunad->workers[i]);
        if (ret == 0)
            lunad->worker_count++;
    }
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (ret < 0)
        log_error("cannot start worker threads: %s", strerror(-ret));
    return ret;
}

static void stop_workers(struct lunad *lunad)
{
    for (unsigned i = 0; i < lunad->worker_count; i++)
        worker_request_stop(lunad->workers[i], SHUTDOWN_GRACE_SECONDS);
    for (unsigned i = 0; i < lunad->worker_count; i++)
        worker_join(lunad->workers[i]);
    lunad->worker_count = 0;
}

static void flush_done(struct bdev_io *io) { (void)io; }

/* After the last client: make every acknowledged write stable.  -EIO if one failed. */
static int flush_exports(struct lunad *lunad)
{
    struct export_table *table = export_registry_current(lunad->registry);
    if (!table)
        return 0;
    struct aio_context *ctx = aio_context_new(lunad->loop);
    if (!ctx) {
        log_error("out of memory flushing exports at exit");
        export_table_unref(table);
        return -ENOMEM;
    }
    int ret = 0;
    for (size_t i = 0; i < table->count; i++) {
        struct export *export = table->exports[i];
        if (export->readonly)
            continue;
        struct bdev_io io = {.op = BDEV_OP_FLUSH, .ctx = ctx, .complete = flush_done};
        bdev_submit(export->bdev, &io);
        aio_context_drain(ctx);
        if (io.result < 0) {
            log_error("export '%s': flush at exit failed: %s", export->config.name, strerror(-io.result));
            ret = -EIO;
        }
    }
    aio_context_free(ctx);
    export_table_unref(table);
    return ret;
}

static void print_connect_hint(const struct lunad *lunad)
{
    log_info("listening on %s", listener_set_describe(lunad->listeners));
    for (size_t i = 0; i < lunad->config.export_count; i++) {
        const struct export_config *export = &lunad->config.exports[i];
        log_info("export '%s': %s", export->name, export->bdev.path);
    }
    /* Under socket activation the configured addresses are not ours to advertise. */
    if (lunad->config.nbd_listen_count && lunad->config.export_count && sd_listen_fds(0) <= 0) {
        const struct listen_address *address = &lunad->config.nbd_listen[0];
        const char *host = address->host[0] && strcmp(address->host, "*") != 0 ? address->host : "127.0.0.1";
        bool v6 = strchr(host, ':') != NULL;
        log_info("connect with: nbdinfo nbd://%s%s%s:%s/%s   or   qemu-img info nbd://%s%s%s:%s/%s",
                 v6 ? "[" : "", host, v6 ? "]" : "", address->port, lunad->config.exports[0].name,
                 v6 ? "[" : "", host, v6 ? "]" : "", address->port, lunad->config.exports[0].name);
    }
}

static int serve(struct lunad *lunad)
{
    char *message = NULL;
    int ret = export_registry_publish(lunad->registry, lunad->config.exports,
                                      lunad->config.export_count, &message);
    if (ret < 0) {
        log_error("%s", message ? message : strerror(-ret));
        free(message);
        return ret;
    }
    ret = start_workers(lunad);
    if (ret < 0)
        return ret;
    ret = iscsi_settings_build(&lunad->config, &lunad->iscsi, &message);
    if (ret < 0) {
        log_error("%s", message ? message : strerror(-ret));
        free(message);
        stop_workers(lunad);
        return ret;
    }
    ret = listener_set_open(&lunad->config, lunad->iscsi, lunad->loop, lunad->workers, lunad->worker_count,
                            &lunad->listeners, &message);
    if (ret < 0) {
        log_error("%s", message ? message : strerror(-ret));
        free(message);
        stop_workers(lunad);
        return ret;
    }
    if (lunad->config.admin_socket) {
        ret = admin_open(lunad->config.admin_socket, lunad->loop, lunad->registry, &lunad->config, &lunad->admin,
                         &message);
        if (ret < 0) {
            log_error("%s", message ? message : strerror(-ret));
            free(message);
            listener_set_close(lunad->listeners);
            stop_workers(lunad);
            return ret;
        }
    }
    if (lunad->config.pidfile) {
        ret = pidfile_write(lunad->config.pidfile);
        if (ret < 0) {
            log_error("pidfile %s: %s", lunad->config.pidfile, strerror(-ret));
            admin_close(lunad->admin);
            lunad->admin = NULL;
            listener_set_close(lunad->listeners);
            stop_workers(lunad);
            return ret;
        }
    }

    ev_signal_init(&lunad->sigterm, signal_cb, SIGTERM);
    ev_signal_init(&lunad->sigint, signal_cb, SIGINT);
    ev_signal_init(&lunad->sighup, signal_cb, SIGHUP);
    ev_signal *signals[] = {&lunad->sigterm, &lunad->sigint, &lunad->sighup};
    for (size_t i = 0; i < 3; i++) {
        signals[i]->data = lunad;
        ev_signal_start(lunad->loop, signals[i]);
    }

    log_info("lunad %s: %u worker(s), %zu export(s), configuration: %s", LUNA_VERSION,
             lunad->worker_count, lunad->config.export_count, lunad->config.source);
    if (lunad->admin)
        log_info("admin socket: %s (lunactl -s %s)", lunad->config.admin_socket, lunad->config.admin_socket);
    print_connect_hint(lunad);
    sd_notify(0, "READY=1");

    ev_run(lunad->loop, 0);

    sd_notify(0, "STOPPING=1");
    for (size_t i = 0; i < 3; i++)
        ev_signal_stop(lunad->loop, signals[i]);
    listener_set_close(lunad->listeners);
    lunad->listeners = NULL;
    /* A commit under way finishes first: half merged is not a state to leave an image in. */
    admin_close(lunad->admin);
    lunad->admin = NULL;
    stop_workers(lunad);
    ret = flush_exports(lunad);
    pidfile_remove(lunad->config.pidfile);
    log_info(ret < 0 ? "stopped (data may not be stable: see above)" : "stopped");
    return ret;
}

int main(int argc, char **argv)
{
    log_set_program("lunad");
    signal(SIGPIPE, SIG_IGN);

    static struct lunad lunad;
    lunad.argc = argc;
    lunad.argv = argv;
    int action;
    if (load_config(argc, argv, &lunad.config, &action) < 0)
        return 2;
    if (action == LUNAD_CLI_EXIT_OK) {
        lunad_config_clear(&lunad.config);
        return 0;
    }
    if (action == LUNAD_CLI_CHECK) {
        printf("%s: configuration OK (%zu export(s))\n", lunad.config.source, lunad.config.export_count);
        lunad_config_clear(&lunad.config);
        return 0;
    }
    log_set_level(lunad.config.log_level);

    lunad.loop = ev_default_loop(EVFLAG_AUTO);
    lunad.registry = export_registry_new();
    if (!lunad.loop || !lunad.registry) {
        log_error("out of memory at start-up");
        return 1;
    }
    int ret = serve(&lunad);
    export_registry_free(lunad.registry);
    iscsi_shared_luns_release();
    iscsi_settings_free(lunad.iscsi);
    threadpool_shutdown();
    lunad_config_clear(&lunad.config);
    ev_loop_destroy(lunad.loop);
    return ret < 0 ? 1 : 0;
}
