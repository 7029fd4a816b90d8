#!/usr/bin/python3
"""notify_listener: stands in for systemd's notification socket.

  notify_listener.py SOCKET_PATH OUT_FILE

Binds a Unix datagram socket at SOCKET_PATH and appends every message it
receives (one line per assignment, e.g. READY=1) to OUT_FILE, flushed at
once, until a message contains STOPPING=1 or 60 s pass.  The caller points
lunad's NOTIFY_SOCKET at SOCKET_PATH.
"""
import socket
import sys
import time


def main():
    path, out_path = sys.argv[1], sys.argv[2]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(1.0)
    deadline = time.monotonic() + 60
    with open(out_path, "a") as out:
        print("listening", file=out, flush=True)
        while time.monotonic() < deadline:
            try:
                message = sock.recv(4096).decode(errors="replace")
            except socket.timeout:
                continue
            for assignment in message.splitlines():
                print(assignment, file=out, flush=True)
            if "STOPPING=1" in message.splitlines():
                return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
