#!/usr/bin/python3
"""large_writes: WRITE payloads the way the server's socket reading must cope
with them, on raw sockets (simple replies).

Usage: large_writes.py HOST PORT EXPORT

lunad reads a WRITE payload straight into the request's buffer together
with whatever follows it, and while much of a payload is still to come it
asks the kernel (SO_RCVLOWAT) to wake it only once the rest has arrived.
These checks make sure that neither loses, reorders nor waits for bytes:
- payloads that trickle in slowly, in small pieces with pauses, must still
  be answered as soon as the last byte arrives;
- a 32 MiB payload (the largest accepted, more than the kernel lets a
  low-water mark cover) must not stall;
- several writes of odd sizes sent back to back in one go (each header
  right behind the previous payload), with a read behind them, must all
  be answered and land exactly where they belong.
Prints "ok: ..." per check; exits 1 with "FAIL: ..." on the first problem.
"""
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from misbehave import (CMD_READ, CMD_WRITE, SIMPLE_REPLY_MAGIC, MiB, Failure, expect,  # noqa: E402
                       negotiate, ok, recv_exact, simple_reply)

REQUEST = struct.Struct(">IHHQQI")
REQUEST_MAGIC = 0x25609513
BASE = 8 * MiB  # writes go to [8 MiB, 56 MiB) of the 64 MiB export


def header(command, cookie, offset, length):
    return REQUEST.pack(REQUEST_MAGIC, 0, command, cookie, offset, length)


def read_back(sock, offset, length, cookie):
    sock.sendall(header(CMD_READ, cookie, offset, length))
    error, got, data = simple_reply(sock, length)
    expect(error == 0 and got == cookie, f"READ of {length} at {offset} failed: error {error}, cookie {got:#x}")
    return data


def answered(sock, cookie, what):
    error, got, _ = simple_reply(sock)
    expect(got == cookie, f"{what}: reply for cookie {got:#x}, expected {cookie:#x}")
    expect(error == 0, f"{what}: error {error}")


def trickled(sock):
    for length in (MiB, 256 * 1024 + 1):
        data = os.urandom(length)
        sock.sendall(header(CMD_WRITE, 1, BASE, length))
        piece = 16 * 1024
        for start in range(0, length, piece):
            sock.sendall(data[start:start + piece])
            if start % (8 * piece) == 0:
                time.sleep(0.005)
        started = time.monotonic()
        answered(sock, 1, f"trickled write of {length}")
        expect(time.monotonic() - started < 2.0, f"trickled write of {length} answered late")
        expect(read_back(sock, BASE, length, 2) == data, f"trickled write of {length}: data differs")
    ok("payloads sent in small pieces with pauses are answered at once and land intact")


def largest(sock):
    length = 32 * MiB
    data = os.urandom(length)
    sock.sendall(header(CMD_WRITE, 3, BASE, length) + data)
    answered(sock, 3, "32 MiB write")
    expect(read_back(sock, BASE, length, 4) == data, "32 MiB write: data differs")
    ok("a 32 MiB payload does not stall")


def back_to_back(sock):
    sizes = [64 * 1024 + 1, MiB, 3 * MiB + 5, 4096, 2 * MiB - 3, 17, 1500 * 1024]
    blob = bytearray()
    expected = {}
    offset = BASE
    for cookie, length in enumerate(sizes, start=10):
        data = os.urandom(length)
        blob += header(CMD_WRITE, cookie, offset, length) + data
        expected[cookie] = (offset, data)
        offset += length + 4096
    # A read queued behind them: it runs concurrently with the writes, so
    # only its arrival is checked (replies may come in any order).
    blob += header(CMD_READ, 99, BASE, 4096)
    sock.sendall(bytes(blob))
    seen = set()
    for _ in range(len(sizes) + 1):
        magic, error, cookie = struct.unpack(">IIQ", recv_exact(sock, 16))
        expect(magic == SIMPLE_REPLY_MAGIC, f"bad reply magic {magic:#x}")
        expect(cookie in expected or cookie == 99, f"unexpected reply cookie {cookie:#x}")
        expect(cookie not in seen, f"second reply for cookie {cookie:#x}")
        expect(error == 0, f"request {cookie} failed with error {error}")
        if cookie == 99:
            recv_exact(sock, 4096)
        seen.add(cookie)
    for cookie, (offset, data) in expected.items():
        expect(read_back(sock, offset, len(data), 100 + cookie) == data, f"write {cookie}: data differs")
    ok(f"{len(sizes)} writes of odd sizes sent back to back are all answered and land intact")


def main():
    if len(sys.argv) != 4:
        print(f"usage: {sys.argv[0]} HOST PORT EXPORT", file=sys.stderr)
        return 2
    host, port, export = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    try:
        sock, size, _ = negotiate(host, port, export)
        expect(size >= 64 * MiB, f"export too small: {size}")
        sock.settimeout(20.0)
        trickled(sock)
        largest(sock)
        back_to_back(sock)
        sock.close()
    except (Failure, EOFError, OSError) as e:
        print(f"FAIL: {e}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
