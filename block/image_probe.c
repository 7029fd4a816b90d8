#include "block/image_probe.h"

#include <fcntl.h>
#include <unistd.h>

#include "block/foreign/foreign.h"
#include "block/qcow2/qcow2.h"

enum bdev_format image_probe(const char *path)
{
    uint8_t start[512];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return BDEV_FORMAT_AUTO;
    ssize_t length = pread(fd, start, sizeof(start), 0);
    close(fd);
    if (length <= 0)
        return BDEV_FORMAT_AUTO;
    if (qcow2_probe_bytes(start, (size_t)length))
        return BDEV_FORMAT_QCOW2;
    if (vmdk_probe(start, (size_t)length))
        return BDEV_FORMAT_VMDK;
    if (vdi_probe(start, (size_t)length))
        return BDEV_FORMAT_VDI;
    if (vpc_probe(start, (size_t)length))
        return BDEV_FORMAT_VPC;
    return BDEV_FORMAT_AUTO;
}
