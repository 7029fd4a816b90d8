#!/usr/bin/python3
# Holds many NBD connections open and idle, so the benchmark can read what each one costs a
# server in memory. Every connection completes the handshake with NBD_OPT_GO (libnbd's
# connect_uri), because a bare TCP connection that never negotiates would only measure the
# server's accept path, not a client that is really attached to an export.
#
# Usage: nbd_idle_connections.py URI COUNT
# Prints "ready COUNT" once all are open, then idles until its standard input is closed.
# Runs under /usr/bin/python3, where Debian's python3-libnbd lives.

import sys

import nbd


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: nbd_idle_connections.py URI COUNT", file=sys.stderr)
        return 2
    uri, count = sys.argv[1], int(sys.argv[2])
    handles = []
    for index in range(count):
        handle = nbd.NBD()
        try:
            handle.connect_uri(uri)
        except nbd.Error as error:
            print(f"connection {index + 1} of {count} failed: {error}", file=sys.stderr)
            return 1
        handles.append(handle)
    print(f"ready {len(handles)}", flush=True)
    # EOF on stdin is the signal to stop; the handles close when the process exits.
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
