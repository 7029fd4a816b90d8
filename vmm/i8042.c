#include "vmm/i8042.h"

#include <string.h>

#include "vmm/io_bus.h"

static void controller_read(void *opaque, uint64_t offset, uint8_t *data, unsigned length)
{
    (void)opaque;
    (void)offset;
    /* Status 0: output buffer empty, input buffer empty.  Data reads find nothing either. */
    memset(data, 0, length);
}

static void command_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned length)
{
    struct i8042 *controller = opaque;
    (void)offset;
    if (length >= 1 && data[0] == I8042_RESET_COMMAND && controller->reset)
        controller->reset(controller->opaque);
}

static void data_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned length)
{
    (void)opaque;
    (void)offset;
    (void)data;
    (void)length;
}

int i8042_register(struct i8042 *controller, struct io_bus *ports)
{
    int ret = io_bus_register(ports, I8042_DATA_PORT, 1, controller_read, data_write, controller);
    if (ret < 0)
        return ret;
    return io_bus_register(ports, I8042_COMMAND_PORT, 1, controller_read, command_write, controller);
}
