#!/usr/bin/python3
"""hold_handle: one NBD connection kept open across something the caller does
(a configuration reload), then used again.

  hold_handle.py URI GO_FILE

Connects, writes and reads back a pattern, prints "connected", then waits
(up to 60 s) until GO_FILE exists, and writes, flushes and reads again on
the same connection.  Exits 0 only if every step worked.
"""
import os
import sys
import time

import nbd


def round_trip(h, byte, offset):
    data = bytes([byte]) * 65536
    h.pwrite(data, offset)
    h.flush()
    if h.pread(len(data), offset) != data:
        raise RuntimeError(f"read back at {offset} differs from what was written")


def main():
    uri, go_file = sys.argv[1], sys.argv[2]
    h = nbd.NBD()
    h.connect_uri(uri)
    round_trip(h, 0x61, 0)
    print("connected", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            print("hold_handle: nobody created", go_file, file=sys.stderr)
            return 1
        time.sleep(0.05)
    try:
        round_trip(h, 0x62, 65536)
        round_trip(h, 0x63, 0)
        h.shutdown()
    except (nbd.Error, RuntimeError) as e:
        print(f"hold_handle: {uri} stopped working after the reload: {e}", flush=True)
        return 1
    print(f"hold_handle: {uri} still works", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
