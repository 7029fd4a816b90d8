#include "block/pool_submit.h"

#include <errno.h>

#include "block/aio_internal.h"

/* One request on the pool (an aio record of io->ctx). */
struct pool_request {
    struct aio_work work; /* first: the pool hands this back */
    struct bdev_io *io;
    int result;
};

_Static_assert(sizeof(struct pool_request) <= AIO_RECORD_SIZE, "pool_request must fit an aio record");

static void pool_request_run(struct aio_work *work)
{
    struct pool_request *request = (struct pool_request *)work;
    struct bdev_io *io = request->io;
    request->result = io->bdev->ops->blocking(io->bdev, io);
}

static void pool_request_done(struct aio_work *work)
{
    struct pool_request *request = (struct pool_request *)work;
    struct bdev_io *io = request->io;
    int result = request->result;
    aio_record_put(io->ctx, request);
    aio_request_finish(io, result < 0 ? result : 0);
}

void pool_submit(struct bdev *bdev, struct bdev_io *io)
{
    (void)bdev; /* io->bdev is set by bdev_submit */
    struct pool_request *request = aio_record_get(io->ctx);
    if (!request) {
        aio_context_complete(io->ctx, io, -ENOMEM);
        return;
    }
    request->io = io;
    request->work.run = pool_request_run;
    request->work.done = pool_request_done;
    int rc = aio_context_run_in_pool(io->ctx, &request->work);
    if (rc < 0) {
        aio_record_put(io->ctx, request);
        aio_context_complete(io->ctx, io, rc);
    }
}
