#!/usr/bin/python3
"""acked_writes: what a server acknowledged must be in its file.

  acked_writes.py write URI LOG BLOCK_BYTES [DEPTH]
      Keeps DEPTH (default 32) writes of BLOCK_BYTES in flight, each to a
      fresh slot with a pattern naming its sequence number, until the
      connection ends (the server was stopped).  Prints "flowing" once 100
      writes were acknowledged; writes the acknowledged ones (offset,
      sequence, length) to LOG.
  acked_writes.py verify LOG FILE
      Checks every acknowledged write is in FILE, byte for byte.
"""
import struct
import sys
import time

import nbd

def pattern(sequence, length):
    return struct.pack(">Q", sequence) * (length // 8)


def write(uri, log_path, block, depth):
    h = nbd.NBD()
    h.connect_uri(uri)
    slots = h.get_size() // block
    in_flight = {}  # cookie -> (offset, sequence, buffer)
    acked = []
    sequence = 0
    announced = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            while len(in_flight) < depth and sequence < slots:
                offset = sequence * block
                buffer = nbd.Buffer.from_bytearray(bytearray(pattern(sequence, block)))
                cookie = h.aio_pwrite(buffer, offset)
                in_flight[cookie] = (offset, sequence, buffer)
                sequence += 1
            if sequence >= slots and not in_flight:
                print("acked_writes: ran out of slots before the server stopped", file=sys.stderr)
                break
            h.poll(1000)
            for cookie in list(in_flight):
                if h.aio_command_completed(cookie):
                    offset, seq, _ = in_flight.pop(cookie)
                    acked.append((offset, seq))
            if not announced and len(acked) >= 100:
                print("flowing", flush=True)
                announced = True
    except nbd.Error as e:
        # The server went away: commands still in flight were never acknowledged.
        print(f"acked_writes: connection ended ({e.string}); {len(acked)} acknowledged, "
              f"{len(in_flight)} in flight", flush=True)
    with open(log_path, "w") as log:
        for offset, seq in acked:
            log.write(f"{offset} {seq} {block}\n")
    return 0 if acked else 1


def verify(log_path, file_path):
    missing = 0
    total = 0
    with open(file_path, "rb") as f, open(log_path) as log:
        for line in log:
            offset, seq, length = (int(x) for x in line.split())
            total += 1
            f.seek(offset)
            if f.read(length) != pattern(seq, length):
                missing += 1
                if missing <= 5:
                    print(f"acknowledged write {seq} at offset {offset} is not in {file_path}")
    print(f"acked_writes: {total} acknowledged writes, {missing} missing from the file")
    return 1 if missing or total == 0 else 0


def main():
    if len(sys.argv) >= 5 and sys.argv[1] == "write":
        return write(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 32)
    if len(sys.argv) == 4 and sys.argv[1] == "verify":
        return verify(sys.argv[2], sys.argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
