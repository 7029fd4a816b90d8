#!/usr/bin/python3
"""Write the seed corpus of fuzz_nbd_session: valid NBD client conversations.

Each file is two shape bytes (see enum shape_bits in fuzz_nbd_session.c:
chunking, draining, limits, how the session ends) followed by the bytes a
client sends: handshake, options, requests and payloads.  Values are those of
the NBD protocol document (NetworkBlockDevice/nbd doc/proto.md), extended
headers as in its extension-ext-header branch.

Usage: /usr/bin/python3 tests/fuzz/make_nbd_corpus.py [OUTPUT_DIR]
(default: tests/fuzz/corpus/nbd_session next to this script).  Files are
rewritten in place; the names are stable, so a rerun changes nothing.
"""
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REQUEST_MAGIC = 0x25609513
EXTENDED_REQUEST_MAGIC = 0x21E41C71

FLAG_C_FIXED_NEWSTYLE = 1
FLAG_C_NO_ZEROES = 2

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_PEEK_EXPORT, OPT_STARTTLS = 1, 2, 3, 4, 5
OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY = 6, 7, 8
OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT, OPT_EXTENDED_HEADERS = 9, 10, 11

INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 0, 1, 2, 3

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
CMD_TRIM, CMD_CACHE, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 4, 5, 6, 7

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4
CMD_FLAG_PAYLOAD_LEN = 1 << 5

# Shape byte bits (fuzz_nbd_session.c enum shape_bits).
CHUNK_WHOLE, CHUNK_8, CHUNK_64, CHUNK_512 = 0, 1, 2, 3
DRAIN_EACH = 0x04
FEW_INFLIGHT = 0x08
SMALL_PAYLOAD = 0x10
END_DRAIN_THEN_FREE, END_FREE_IN_FLIGHT, END_INPUT_CLOSED, END_SHUTDOWN = (
    0 << 5, 1 << 5, 2 << 5, 3 << 5)
KEEP_OUTPUT = 0x80


def client_flags(flags=FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES):
    return struct.pack(">I", flags)


def option(code, data=b""):
    return struct.pack(">QII", IHAVEOPT, code, len(data)) + data


def info_data(name, requests=()):
    name = name.encode()
    return (struct.pack(">I", len(name)) + name + struct.pack(">H", len(requests)) +
            b"".join(struct.pack(">H", r) for r in requests))


def meta_data(name, queries):
    name = name.encode()
    out = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    for query in queries:
        query = query.encode()
        out += struct.pack(">I", len(query)) + query
    return out


class Client:
    """Builds one conversation; extended switches the request header format."""

    def __init__(self):
        self.out = bytearray()
        self.extended = False
        self.cookie = 0

    def send(self, data):
        self.out += data
        return self

    def request(self, command, offset=0, length=0, flags=0, payload=b""):
        self.cookie += 1
        if self.extended:
            self.out += struct.pack(">IHHQQQ", EXTENDED_REQUEST_MAGIC, flags, command,
                                    self.cookie, offset, length)
        else:
            self.out += struct.pack(">IHHQQI", REQUEST_MAGIC, flags, command,
                                    self.cookie, offset, length)
        self.out += payload
        return self


def pattern(length, seed):
    return bytes((i * 7 + seed) & 0xFF for i in range(length))


def conversations():
    # Oldstyle-compatible EXPORT_NAME with NO_ZEROES, simple replies, plain I/O.
    c = Client().send(client_flags()).send(option(OPT_EXPORT_NAME, b"disk"))
    c.request(CMD_WRITE, 0, 512, payload=pattern(512, 1))
    c.request(CMD_READ, 0, 512)
    c.request(CMD_WRITE, 4096, 256, flags=CMD_FLAG_FUA, payload=pattern(256, 2))
    c.request(CMD_FLUSH)
    c.request(CMD_READ, 4000, 200)
    c.request(CMD_DISC)
    yield "export_name_simple_io", bytes([CHUNK_WHOLE | DRAIN_EACH, 0]), c.out

    # EXPORT_NAME of the default export without NO_ZEROES (124 zero bytes in the reply).
    c = Client().send(client_flags(FLAG_C_FIXED_NEWSTYLE)).send(option(OPT_EXPORT_NAME))
    c.request(CMD_READ, 0, 1024)
    c.request(CMD_CACHE, 0, 65536)
    c.request(CMD_DISC)
    yield "export_name_default_zeroes", bytes([CHUNK_8, 7]), c.out

    # LIST, INFO with every info request, unknown options, GO to the read-only export.
    c = Client().send(client_flags())
    c.send(option(OPT_LIST))
    c.send(option(OPT_INFO, info_data("ro", [INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE])))
    c.send(option(OPT_INFO, info_data("nope")))
    c.send(option(OPT_STARTTLS))
    c.send(option(OPT_PEEK_EXPORT))
    c.send(option(0x4242, b"junk data"))
    c.send(option(OPT_GO, info_data("ro", [INFO_EXPORT, INFO_NAME, INFO_BLOCK_SIZE])))
    c.request(CMD_READ, 0, 4096)
    c.request(CMD_READ, 100000, 3000)
    c.request(CMD_WRITE, 0, 16, payload=pattern(16, 3))  # EPERM, payload skipped
    c.request(CMD_TRIM, 0, 4096)                         # EPERM
    c.request(CMD_READ, 256 << 10, 1)                    # beyond the end: EINVAL
    c.request(CMD_DISC)
    yield "go_infos_read_only", bytes([CHUNK_64 | DRAIN_EACH, 3]), c.out

    # Structured replies, meta contexts, block status, sparse and DF reads.
    c = Client().send(client_flags())
    c.send(option(OPT_STRUCTURED_REPLY))
    c.send(option(OPT_LIST_META_CONTEXT, meta_data("disk", [])))
    c.send(option(OPT_LIST_META_CONTEXT, meta_data("disk", ["base:"])))
    c.send(option(OPT_SET_META_CONTEXT, meta_data("disk", ["base:allocation", "qemu:dirty-bitmap:x"])))
    c.send(option(OPT_GO, info_data("disk", [INFO_DESCRIPTION])))
    c.request(CMD_WRITE, 65536, 1024, payload=pattern(1024, 4))
    c.request(CMD_BLOCK_STATUS, 0, 1 << 20)
    c.request(CMD_BLOCK_STATUS, 0, 1 << 20, flags=CMD_FLAG_REQ_ONE)
    c.request(CMD_READ, 0, 256 << 10)                    # sparse: OFFSET_HOLE chunks
    c.request(CMD_READ, 0, 128 << 10, flags=CMD_FLAG_DF)
    c.request(CMD_TRIM, 65536, 4096)
    c.request(CMD_BLOCK_STATUS, 60000, 10000)
    c.request(CMD_READ, 1 << 20, 1)                      # out of range
    c.request(CMD_DISC)
    yield "structured_meta_block_status", bytes([CHUNK_512, 11]), c.out

    # Extended headers: 64-bit requests, WRITE with PAYLOAD_LEN, zeroing, block status.
    c = Client().send(client_flags())
    c.send(option(OPT_EXTENDED_HEADERS))
    c.send(option(OPT_STRUCTURED_REPLY))                 # refused: EXT_HEADER_REQD
    c.send(option(OPT_SET_META_CONTEXT, meta_data("", ["base:allocation"])))
    c.send(option(OPT_GO, info_data("", [INFO_BLOCK_SIZE])))
    c.extended = True
    c.request(CMD_WRITE, 8192, 700, flags=CMD_FLAG_PAYLOAD_LEN | CMD_FLAG_FUA,
              payload=pattern(700, 5))
    c.request(CMD_READ, 8000, 1000)
    c.request(CMD_WRITE_ZEROES, 0, 65536, flags=CMD_FLAG_NO_HOLE)
    c.request(CMD_WRITE_ZEROES, 65536, 65536, flags=CMD_FLAG_FAST_ZERO)
    c.request(CMD_TRIM, 131072, 1 << 19, flags=CMD_FLAG_FUA)
    c.request(CMD_BLOCK_STATUS, 0, 1 << 20)
    c.request(CMD_READ, 0, 1 << 19)
    c.request(CMD_CACHE, 0, 1 << 20)
    c.request(CMD_FLUSH)
    c.request(CMD_WRITE, 0, 1 << 33)                     # no PAYLOAD_LEN: EINVAL
    c.request(CMD_DISC)
    yield "extended_headers_requests", bytes([CHUNK_64 | KEEP_OUTPUT, 19]), c.out

    # Simple replies with many writes in flight, trim and write_zeroes, then end of input.
    c = Client().send(client_flags()).send(option(OPT_GO, info_data("disk")))
    for i in range(6):
        c.request(CMD_WRITE, i * 4096 + 100, 300, payload=pattern(300, 10 + i))
    c.request(CMD_WRITE_ZEROES, 0, 8192)
    c.request(CMD_WRITE_ZEROES, 4096, 4096, flags=CMD_FLAG_NO_HOLE | CMD_FLAG_FUA)
    c.request(CMD_TRIM, 0, 1 << 20)
    c.request(CMD_READ, 0, 24576)
    yield "writes_trim_zeroes_eof", bytes([CHUNK_WHOLE | FEW_INFLIGHT | END_INPUT_CLOSED, 0]), c.out

    # The same conversation, but the client vanishes with requests in flight.
    yield ("writes_free_in_flight", bytes([CHUNK_512 | END_FREE_IN_FLIGHT | KEEP_OUTPUT, 5]),
           c.out)

    # A fragmented disk: more extents than one sparse read or block status asks for.
    c = Client().send(client_flags()).send(option(OPT_STRUCTURED_REPLY))
    c.send(option(OPT_SET_META_CONTEXT, meta_data("disk", ["base:allocation"])))
    c.send(option(OPT_GO, info_data("disk")))
    for i in range(60):
        c.request(CMD_WRITE, i * 8192 + 7, 1, payload=bytes([i + 1]))
    c.request(CMD_READ, 0, 1 << 19)
    c.request(CMD_READ, 4096, 300000)
    c.request(CMD_BLOCK_STATUS, 0, 1 << 20)
    c.request(CMD_BLOCK_STATUS, 8192, 1 << 19, flags=CMD_FLAG_REQ_ONE)
    c.request(CMD_DISC)
    yield "fragmented_sparse_read", bytes([CHUNK_8 | DRAIN_EACH, 2]), c.out

    # The 8 GiB sparse export with extended headers: 64-bit lengths reach the disk.
    c = Client().send(client_flags())
    c.send(option(OPT_EXTENDED_HEADERS))
    c.send(option(OPT_SET_META_CONTEXT, meta_data("big", ["base:allocation"])))
    c.send(option(OPT_GO, info_data("big", [INFO_BLOCK_SIZE])))
    c.extended = True
    c.request(CMD_WRITE, (4 << 30) + 100, 512, flags=CMD_FLAG_PAYLOAD_LEN, payload=pattern(512, 12))
    c.request(CMD_WRITE_ZEROES, 1 << 30, 5 << 30)
    c.request(CMD_TRIM, 0, 6 << 30)
    c.request(CMD_BLOCK_STATUS, 0, 8 << 30)
    c.request(CMD_BLOCK_STATUS, 4 << 30, 1 << 20, flags=CMD_FLAG_REQ_ONE)
    c.request(CMD_READ, (4 << 30) - 4096, 8192)
    c.request(CMD_READ, 0, 40 << 20)                     # above max_payload: EOVERFLOW
    c.request(CMD_WRITE_ZEROES, (8 << 30) - 4096, 8192)  # past the end: ENOSPC
    c.request(CMD_DISC)
    yield "extended_big_export", bytes([CHUNK_WHOLE | DRAIN_EACH, 0]), c.out

    # The same export with compact headers: 32-bit lengths near the limit.
    c = Client().send(client_flags()).send(option(OPT_STRUCTURED_REPLY))
    c.send(option(OPT_SET_META_CONTEXT, meta_data("big", ["base:allocation"])))
    c.send(option(OPT_GO, info_data("big")))
    c.request(CMD_BLOCK_STATUS, 0, 0xFFFFFFFF)
    c.request(CMD_WRITE_ZEROES, 1 << 32, 0xFFFFF000, flags=CMD_FLAG_FAST_ZERO)
    c.request(CMD_READ, (8 << 30) - 65536, 65536)
    c.request(CMD_DISC)
    yield "structured_big_export", bytes([CHUNK_8 | DRAIN_EACH, 41]), c.out

    # O_DIRECT export: unaligned writes and reads (bounced), structured replies.
    c = Client().send(client_flags())
    c.send(option(OPT_STRUCTURED_REPLY))
    c.send(option(OPT_SET_META_CONTEXT, meta_data("direct", ["base:allocation"])))
    c.send(option(OPT_GO, info_data("direct", [INFO_BLOCK_SIZE])))
    c.request(CMD_WRITE, 1000, 100, payload=pattern(100, 6))
    c.request(CMD_WRITE, 4095, 2, flags=CMD_FLAG_FUA, payload=b"\xAA\x55")
    c.request(CMD_READ, 900, 3300)
    c.request(CMD_WRITE_ZEROES, 1001, 50)
    c.request(CMD_TRIM, 0, 4096)
    c.request(CMD_BLOCK_STATUS, 0, 8192)
    c.request(CMD_READ, 0, 96 << 10)
    c.request(CMD_DISC)
    yield "direct_unaligned", bytes([CHUNK_8 | DRAIN_EACH, 23]), c.out

    # Limits: small max_payload, oversized and refused requests, unknown commands and flags.
    c = Client().send(client_flags()).send(option(OPT_STRUCTURED_REPLY))
    c.send(option(OPT_GO, info_data("disk", [INFO_BLOCK_SIZE])))
    c.request(CMD_WRITE, 0, 1000, payload=pattern(1000, 7))
    c.request(CMD_READ, 0, 8192)                         # EOVERFLOW past max_payload
    c.request(CMD_READ, 0, 16, flags=0x80)               # unknown flag
    c.request(42, 0, 16)                                 # unknown command
    c.request(CMD_BLOCK_STATUS, 0, 4096)                 # no meta context: EINVAL
    c.request(CMD_WRITE_ZEROES, 1 << 20, 1)              # ENOSPC
    c.request(CMD_WRITE, 0, 6000, payload=pattern(1500, 8))  # oversized: skipped, input ends inside
    yield ("limits_and_refusals",
           bytes([CHUNK_64 | SMALL_PAYLOAD | DRAIN_EACH | END_INPUT_CLOSED, 29]), c.out)

    # Handshake errors: options with bad data, then ABORT.
    c = Client().send(client_flags())
    c.send(option(OPT_LIST, b"x"))
    c.send(option(OPT_STRUCTURED_REPLY, b"yy"))
    c.send(option(OPT_GO, b"\x00\x00\x00\x10abc"))
    c.send(option(OPT_INFO, info_data("disk") + b"extra"))
    c.send(option(OPT_SET_META_CONTEXT, meta_data("disk", ["base:allocation"])))  # no structured
    c.send(option(OPT_ABORT))
    yield "handshake_errors_abort", bytes([CHUNK_8 | DRAIN_EACH, 31]), c.out

    # SIGTERM halfway: requests already received are answered, later ones get NBD_ESHUTDOWN.
    c = Client().send(client_flags()).send(option(OPT_EXPORT_NAME, b"disk"))
    for i in range(4):
        c.request(CMD_READ, i * 65536, 65536)
    c.request(CMD_WRITE, 0, 64, payload=pattern(64, 8))
    for i in range(4):
        c.request(CMD_READ, i * 4096, 4096)
    yield "shutdown_midway", bytes([CHUNK_64 | END_SHUTDOWN, 13]), c.out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "nbd_session")
    os.makedirs(out_dir, exist_ok=True)
    for name, shape, body in conversations():
        data = bytes(shape) + bytes(body)
        if len(data) > 4096:
            raise SystemExit(f"{name}: {len(data)} bytes, above the fuzzer's -max_len=4096")
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
