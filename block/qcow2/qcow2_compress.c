/*
 * Compressed clusters, as QEMU writes them: zlib as raw deflate with a
 * 4 KiB window (no zlib header), or a zstd frame.  The data on disk is
 * padded to 512-byte sectors and may be followed by another cluster's
 * data, so decompression stops once a whole cluster has come out.
 */
#include <errno.h>
#include <zlib.h>
#include <zstd.h>

#include "block/qcow2/qcow2_internal.h"

static int zlib_decompress(const uint8_t *input, size_t input_length, uint8_t *output, size_t cluster_size)
{
    z_stream stream = {
        .next_in = (Bytef *)input,
        .avail_in = (uInt)input_length,
        .next_out = output,
        .avail_out = (uInt)cluster_size,
    };
    if (inflateInit2(&stream, -12) != Z_OK)
        return -ENOMEM;
    int rc = inflate(&stream, Z_FINISH);
    bool full = stream.avail_out == 0;
    inflateEnd(&stream);
    /* Z_BUF_ERROR with a full output: the cluster is complete, the rest is padding. */
    return (rc == Z_STREAM_END || rc == Z_BUF_ERROR) && full ? 0 : -EIO;
}

static int zstd_decompress(const uint8_t *input, size_t input_length, uint8_t *output, size_t cluster_size)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (!dctx)
        return -ENOMEM;
    ZSTD_inBuffer in = {input, input_length, 0};
    ZSTD_outBuffer out = {output, cluster_size, 0};
    int rc = 0;
    while (out.pos < out.size) {
        size_t before_in = in.pos, before_out = out.pos;
        size_t ret = ZSTD_decompressStream(dctx, &out, &in);
        if (ZSTD_isError(ret)) {
            rc = -EIO;
            break;
        }
        if (in.pos == before_in && out.pos == before_out) {
            rc = -EIO; /* no progress: truncated data */
            break;
        }
    }
    ZSTD_freeDCtx(dctx);
    return rc;
}

int qcow2_decompress(uint8_t compression_type, const uint8_t *input, size_t input_length, uint8_t *output,
                     size_t cluster_size)
{
    switch (compression_type) {
    case QCOW2_COMPRESSION_ZLIB:
        return zlib_decompress(input, input_length, output, cluster_size);
    case QCOW2_COMPRESSION_ZSTD:
        return zstd_decompress(input, input_length, output, cluster_size);
    }
    return -ENOTSUP;
}

int qcow2_compress(uint8_t compression_type, const uint8_t *input, size_t cluster_size, uint8_t *output,
                   size_t max_output, size_t *output_length)
{
    if (compression_type == QCOW2_COMPRESSION_ZSTD) {
        size_t ret = ZSTD_compress(output, max_output, input, cluster_size, ZSTD_CLEVEL_DEFAULT);
        /* An error here is almost always "does not fit": store the cluster uncompressed. */
        if (ZSTD_isError(ret) || ret >= max_output)
            return -ENOSPC;
        *output_length = ret;
        return 0;
    }
    if (compression_type != QCOW2_COMPRESSION_ZLIB)
        return -ENOTSUP;
    z_stream stream = {0};
    /* QEMU's parameters: best compression, raw deflate, 4 KiB window. */
    if (deflateInit2(&stream, Z_BEST_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    stream.next_in = (Bytef *)input;
    stream.avail_in = (uInt)cluster_size;
    stream.next_out = output;
    stream.avail_out = (uInt)max_output;
    int rc = deflate(&stream, Z_FINISH);
    size_t produced = max_output - stream.avail_out;
    deflateEnd(&stream);
    if (rc != Z_STREAM_END || produced >= max_output)
        return -ENOSPC;
    *output_length = produced;
    return 0;
}
