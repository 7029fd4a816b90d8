#!/usr/bin/python3
"""misbehave: NBD clients that break the protocol on purpose, on raw sockets.

Usage: misbehave.py HOST PORT EXPORT SCENARIO

Each scenario does one wrong thing and checks what the NBD protocol document
(NetworkBlockDevice/nbd doc/proto.md) demands of the server in return: a
closed connection where the spec says "MUST drop the TCP connection", an
error reply (and a connection that keeps working) where it says "SHOULD
return NBD_EINVAL".  Whether the server survives and still serves others is
checked by the calling script.  Prints "ok: ..." per check; exits 1 with
"FAIL: ..." on the first wrong answer.  The protocol constants are written
out here, independently of lunad's own headers.
"""
import os
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPTION_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2

OPT_ABORT = 2
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
REP_ACK = 1
REP_INFO = 3
REP_ERR_UNSUP = (1 << 31) + 1
INFO_EXPORT = 0

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3

REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_ERROR = 32769
REPLY_TYPE_ERROR_OFFSET = 32770
REPLY_FLAG_DONE = 1

EINVAL = 22
EOVERFLOW = 75
MiB = 1 << 20
TIMEOUT = 10.0


class Failure(Exception):
    pass


def ok(message):
    print("ok:", message, flush=True)


def expect(condition, message):
    if not condition:
        raise Failure(message)


def recv_exact(sock, length):
    data = bytearray()
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {length} bytes")
        data += chunk
    return bytes(data)


def closed_by_server(sock, timeout=TIMEOUT):
    """True if the server closes the connection (EOF or reset) within timeout;
    any bytes it sends before closing are drained."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def connect(host, port):
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def greeting(sock):
    magic, opt_magic, flags = struct.unpack(">QQH", recv_exact(sock, 18))
    expect(magic == NBDMAGIC and opt_magic == IHAVEOPT, f"bad greeting {magic:#x} {opt_magic:#x}")
    expect(flags & FLAG_FIXED_NEWSTYLE, f"server does not offer fixed newstyle (flags {flags:#x})")
    return flags


def send_option(sock, option, data=b""):
    sock.sendall(struct.pack(">QII", IHAVEOPT, option, len(data)) + data)


def option_reply(sock):
    magic, option, reply_type, length = struct.unpack(">QIII", recv_exact(sock, 20))
    expect(magic == OPTION_REPLY_MAGIC, f"bad option reply magic {magic:#x}")
    return option, reply_type, recv_exact(sock, length)


def negotiate(host, port, export, structured=False):
    """Fixed newstyle + NO_ZEROES, optional structured replies, then GO.
    Returns (socket, export size, transmission flags)."""
    sock = connect(host, port)
    greeting(sock)
    sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
    if structured:
        send_option(sock, OPT_STRUCTURED_REPLY)
        _, reply_type, _ = option_reply(sock)
        expect(reply_type == REP_ACK, f"STRUCTURED_REPLY answered {reply_type:#x}")
    name = export.encode()
    send_option(sock, OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    size = flags = None
    while True:
        option, reply_type, data = option_reply(sock)
        expect(option == OPT_GO, f"reply for option {option}, expected GO")
        if reply_type == REP_ACK:
            break
        expect(reply_type == REP_INFO, f"GO failed with reply type {reply_type:#x}: {data!r}")
        (info_type,) = struct.unpack(">H", data[:2])
        if info_type == INFO_EXPORT:
            size, flags = struct.unpack(">QH", data[2:12])
    expect(size is not None, "GO ended without NBD_INFO_EXPORT")
    return sock, size, flags


def send_request(sock, command, cookie, offset, length, flags=0, payload=b"", magic=REQUEST_MAGIC):
    sock.sendall(struct.pack(">IHHQQI", magic, flags, command, cookie, offset, length) + payload)


def simple_reply(sock, read_length=0):
    """(error, cookie, data) of a simple reply; data only when error == 0."""
    magic, error, cookie = struct.unpack(">IIQ", recv_exact(sock, 16))
    expect(magic == SIMPLE_REPLY_MAGIC, f"bad simple reply magic {magic:#x}")
    data = recv_exact(sock, read_length) if error == 0 and read_length else b""
    return error, cookie, data


def structured_reply(sock, first_magic=None):
    """Collect chunks of one structured reply until DONE: (cookie, error, chunks)."""
    chunks = []
    error = 0
    while True:
        head = recv_exact(sock, 20) if first_magic is None else struct.pack(">I", first_magic) + recv_exact(sock, 16)
        first_magic = None
        magic, flags, reply_type, cookie, length = struct.unpack(">IHHQI", head)
        expect(magic == STRUCTURED_REPLY_MAGIC, f"bad structured reply magic {magic:#x}")
        payload = recv_exact(sock, length)
        if reply_type in (REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET):
            (error,) = struct.unpack(">I", payload[:4])
        chunks.append((reply_type, payload))
        if flags & REPLY_FLAG_DONE:
            return cookie, error, chunks


def any_reply(sock):
    """With structured replies negotiated, a reply without payload may be
    simple or structured (spec: "MAY use either"): (cookie, error, kind)."""
    (magic,) = struct.unpack(">I", recv_exact(sock, 4))
    if magic == SIMPLE_REPLY_MAGIC:
        error, cookie = struct.unpack(">IQ", recv_exact(sock, 12))
        return cookie, error, "simple"
    expect(magic == STRUCTURED_REPLY_MAGIC, f"bad reply magic {magic:#x}")
    cookie, error, _ = structured_reply(sock, first_magic=magic)
    return cookie, error, "structured"


def check_read_works(sock, size, cookie=0x7777):
    """A READ on a connection that must still be healthy (simple replies)."""
    send_request(sock, CMD_READ, cookie, 0, 4096)
    error, got_cookie, data = simple_reply(sock, 4096)
    expect(got_cookie == cookie, f"READ answered with cookie {got_cookie:#x}, sent {cookie:#x}")
    expect(error == 0 and len(data) == 4096, f"READ after the bad request failed with error {error}")


# --- scenarios --------------------------------------------------------------

def garbage_handshake(host, port, export):
    sock = connect(host, port)
    greeting(sock)
    sock.sendall(os.urandom(4096))
    expect(closed_by_server(sock), "server kept the connection after 4 KiB of garbage as client flags/options")
    ok("garbage instead of the handshake: connection closed")


def garbage_before_greeting(host, port, export):
    sock = connect(host, port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(1024))
    expect(closed_by_server(sock), "server kept a connection that sent HTTP and garbage")
    ok("HTTP request and garbage at connect: connection closed")


def unknown_client_flags(host, port, export):
    sock = connect(host, port)
    greeting(sock)
    sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES | 0x80))
    # The spec: the server MUST drop the connection on unknown client flags.
    send_option(sock, OPT_STRUCTURED_REPLY)
    expect(closed_by_server(sock), "server kept the connection after unknown client flags (spec: MUST drop)")
    ok("unknown client flag: connection dropped")


def unknown_option(host, port, export):
    sock = connect(host, port)
    greeting(sock)
    sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
    send_option(sock, 0x4242, b"some option data")
    option, reply_type, _ = option_reply(sock)
    expect(option == 0x4242 and reply_type == REP_ERR_UNSUP,
           f"unknown option answered option {option:#x} type {reply_type:#x}, expected ERR_UNSUP")
    name = export.encode()
    send_option(sock, OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    while True:
        _, reply_type, _ = option_reply(sock)
        if reply_type == REP_ACK:
            break
        expect(reply_type == REP_INFO, f"GO after an unknown option failed: {reply_type:#x}")
    check_read_works(sock, 0)
    ok("unknown option: ERR_UNSUP, negotiation goes on, GO and READ work")


def huge_option_then_vanish(host, port, export):
    sock = connect(host, port)
    greeting(sock)
    sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
    sock.sendall(struct.pack(">QII", IHAVEOPT, 0x4243, 0x7FFFFFF0) + b"x" * 1000)
    sock.close()
    ok("option announcing 2 GiB of data, then gone")


def bad_request_magic(host, port, export):
    sock, size, _ = negotiate(host, port, export)
    send_request(sock, CMD_READ, 1, 0, 4096, magic=0x12345678)
    # A server cannot resynchronise after a wrong magic: it must hang up,
    # and must not answer as if it had understood a request.
    sock.settimeout(TIMEOUT)
    try:
        data = sock.recv(16)
    except (ConnectionResetError, socket.timeout) as e:
        expect(not isinstance(e, socket.timeout), "server neither answered nor closed after a wrong request magic")
        data = b""
    expect(len(data) < 16 or struct.unpack(">I", data[:4])[0] != SIMPLE_REPLY_MAGIC or
           struct.unpack(">I", data[4:8])[0] != 0,
           "server answered a request with a wrong magic with success")
    expect(closed_by_server(sock), "server kept the connection after a wrong request magic")
    ok("wrong request magic after GO: connection closed")


def truncated_header(host, port, export):
    sock, _, _ = negotiate(host, port, export)
    sock.sendall(struct.pack(">IHHQ", REQUEST_MAGIC, 0, CMD_READ, 5)[:10])
    time.sleep(0.1)
    sock.close()
    ok("truncated request header, then disconnect")


def disconnect_mid_write(host, port, export):
    sock, _, _ = negotiate(host, port, export)
    # Announce 1 MiB at 8 MiB, send 100 KiB of it, vanish.
    send_request(sock, CMD_WRITE, 9, 8 * MiB, MiB, payload=b"\xee" * (100 * 1024))
    time.sleep(0.1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
    sock.close()
    ok("disconnect in the middle of a WRITE payload")


def oversize_write(host, port, export):
    """WRITE of 32 MiB + 4 KiB, above the advertised maximum payload: the
    server may consume it and answer an error, or hard-disconnect (the
    length is above 2^25); it must never report success."""
    sock, size, _ = negotiate(host, port, export)
    length = 32 * MiB + 4096
    send_request(sock, CMD_WRITE, 0x0B, 0, length)
    payload = b"\x5a" * length
    try:
        sock.settimeout(TIMEOUT)
        sock.sendall(payload)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        ok("oversize WRITE: server hung up while the payload was sent")
        return
    try:
        error, cookie, _ = simple_reply(sock)
    except (EOFError, ConnectionResetError):
        ok("oversize WRITE: server hung up")
        return
    expect(cookie == 0x0B, f"oversize WRITE answered with cookie {cookie:#x}")
    expect(error != 0, "oversize WRITE (above the maximum payload) reported success")
    expect(error in (EINVAL, EOVERFLOW), f"oversize WRITE answered error {error}, expected EINVAL or EOVERFLOW")
    check_read_works(sock, size)
    ok(f"oversize WRITE: error {error}, payload consumed, connection still works")


def absurd_write_length(host, port, export):
    """WRITE announcing ~4 GiB: the server must not try to buffer it."""
    sock, _, _ = negotiate(host, port, export)
    send_request(sock, CMD_WRITE, 0x0C, 0, 0xFFFFF000, payload=b"\0" * 65536)
    sock.settimeout(3)
    try:
        data = sock.recv(16)
        if len(data) >= 8:
            (error,) = struct.unpack(">I", data[4:8])
            expect(error != 0, "a ~4 GiB WRITE reported success")
        ok("WRITE announcing ~4 GiB: refused" + (" and closed" if not data else " with an error"))
    except ConnectionResetError:
        ok("WRITE announcing ~4 GiB: connection reset")
    except socket.timeout:
        ok("WRITE announcing ~4 GiB: server waits for the payload (memory checked by the caller)")
    sock.close()


def oversize_read(host, port, export):
    """Simple-reply READ of 32 MiB + 4 KiB: above the maximum payload (and
    above 2^25, so a hard disconnect is allowed too); never a success."""
    sock, size, _ = negotiate(host, port, export)
    send_request(sock, CMD_READ, 0x0D, 0, 32 * MiB + 4096)
    try:
        error, cookie, _ = simple_reply(sock)
    except (EOFError, ConnectionResetError):
        ok("oversize READ: server hung up")
        return
    expect(cookie == 0x0D and error in (EINVAL, EOVERFLOW),
           f"oversize READ answered cookie {cookie:#x} error {error}, expected EINVAL/EOVERFLOW")
    check_read_works(sock, size)
    ok(f"oversize READ: error {error}, connection still works")


def unknown_command(host, port, export):
    sock, size, _ = negotiate(host, port, export)
    send_request(sock, 0x42, 0x0E, 0, 4096)
    error, cookie, _ = simple_reply(sock)
    expect(cookie == 0x0E, f"unknown command answered with cookie {cookie:#x}")
    expect(error == EINVAL, f"unknown command answered error {error}, spec: SHOULD be EINVAL")
    check_read_works(sock, size)
    ok("unknown command: EINVAL, connection survives")


def unknown_command_structured(host, port, export):
    sock, size, _ = negotiate(host, port, export, structured=True)
    send_request(sock, 0x42, 0x0F, 0, 4096)
    cookie, error, kind = any_reply(sock)
    expect(cookie == 0x0F, f"unknown command answered with cookie {cookie:#x}")
    expect(error == EINVAL, f"unknown command (structured) answered error {error} ({kind} reply), expected EINVAL")
    # A READ with a bad flag must be refused with a structured reply (spec:
    # never a simple reply to READ once structured replies are negotiated).
    send_request(sock, CMD_READ, 0x13, 0, 4096, flags=0x8000)
    (magic,) = struct.unpack(">I", recv_exact(sock, 4))
    expect(magic == STRUCTURED_REPLY_MAGIC, f"READ with a bad flag answered with reply magic {magic:#x}, "
                                            "expected a structured reply")
    cookie, error, _ = structured_reply(sock, first_magic=magic)
    expect(cookie == 0x13 and error == EINVAL, f"READ with a bad flag: cookie {cookie:#x} error {error}")
    send_request(sock, CMD_READ, 0x10, 0, 4096)
    cookie, error, chunks = structured_reply(sock)
    got = sum(len(p) - 8 for t, p in chunks if t == REPLY_TYPE_OFFSET_DATA)
    got += sum(struct.unpack(">QI", p[:12])[1] for t, p in chunks if t == REPLY_TYPE_OFFSET_HOLE)
    expect(cookie == 0x10 and error == 0 and got == 4096, f"READ after it: cookie {cookie:#x} error {error} {got} bytes")
    ok(f"structured replies: unknown command EINVAL ({kind}), bad READ flag EINVAL (structured), connection survives")


def unknown_flags(host, port, export):
    sock, size, _ = negotiate(host, port, export)
    send_request(sock, CMD_READ, 0x11, 0, 4096, flags=0x8000)
    error, cookie, _ = simple_reply(sock, 4096)
    expect(cookie == 0x11, f"READ with an unknown flag answered with cookie {cookie:#x}")
    expect(error == EINVAL, f"READ with unknown flag 0x8000 answered error {error}, spec: SHOULD be EINVAL")
    # FUA is documented for writes, not flush... the spec lets servers ignore
    # it there, so only truly unknown bits are checked.
    send_request(sock, CMD_FLUSH, 0x12, 0, 0, flags=0x4000)
    error, cookie, _ = simple_reply(sock)
    expect(cookie == 0x12 and error == EINVAL, f"FLUSH with unknown flag: cookie {cookie:#x} error {error}")
    check_read_works(sock, size)
    ok("unknown command flags: EINVAL, connection survives")


def out_of_order_cookies(host, port, export):
    """Many requests in one burst with cookies that are not sequential; each
    must be answered once, with its own cookie."""
    sock, size, _ = negotiate(host, port, export)
    cookies = [0xDEAD0000 + i * 7919 for i in range(64)]
    burst = b"".join(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, c, (i % 8) * 4096, 4096)
                     for i, c in enumerate(cookies))
    sock.sendall(burst)
    seen = []
    for _ in cookies:
        error, cookie, data = simple_reply(sock, 4096)
        expect(error == 0, f"pipelined READ failed with {error}")
        seen.append(cookie)
    expect(sorted(seen) == sorted(cookies), "replies do not carry exactly the cookies sent")
    ok("64 pipelined READs in one burst: each cookie answered exactly once")


def many_connections_vanish(host, port, export):
    """50 connections with requests in flight (reads and writes, replies
    never read), then all reset at once."""
    socks = []
    for i in range(50):
        sock, _, _ = negotiate(host, port, export)
        burst = b""
        for j in range(8):
            burst += struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, j, (j * MiB) % (16 * MiB), MiB)
        for j in range(4):
            offset = 16 * MiB + ((i * 4 + j) % 64) * 65536
            burst += struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 100 + j, offset, 65536) + bytes([i]) * 65536
        burst += struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_FLUSH, 200, 0, 0)
        sock.sendall(burst)
        socks.append(sock)
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    ok("50 connections with 13 requests each in flight, reset without reading replies")


def request_before_go(host, port, export):
    sock = connect(host, port)
    greeting(sock)
    sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
    # A transmission request during option haggling is just a bad option
    # magic: the server must not treat it as a READ.
    send_request(sock, CMD_READ, 1, 0, 4096)
    sock.settimeout(TIMEOUT)
    try:
        data = sock.recv(16)
    except ConnectionResetError:
        data = b""
    expect(len(data) < 4 or struct.unpack(">I", data[:4])[0] != SIMPLE_REPLY_MAGIC,
           "server answered a READ sent during option haggling")
    expect(closed_by_server(sock), "server kept the connection after a request during option haggling")
    ok("request sent during option haggling: connection closed")


def abort_option(host, port, export):
    sock = connect(host, port)
    greeting(sock)
    sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
    send_option(sock, OPT_ABORT)
    try:
        _, reply_type, _ = option_reply(sock)
        expect(reply_type == REP_ACK, f"ABORT answered {reply_type:#x}")
    except EOFError:
        pass  # the spec lets the server close without the ack
    expect(closed_by_server(sock), "server kept the connection after NBD_OPT_ABORT")
    ok("NBD_OPT_ABORT: acknowledged and closed")


def silent_client(host, port, export):
    """Connects, reads the greeting, then says nothing: the server must hang
    up within its handshake limit (10 s, as qemu-nbd) instead of holding the
    descriptor forever."""
    sock = connect(host, port)
    greeting(sock)
    started = time.monotonic()
    expect(closed_by_server(sock, timeout=20), "a silent client was never disconnected")
    ok(f"silent client disconnected after {time.monotonic() - started:.1f} s")


def reads_never_read(host, port, export):
    """100 READs of 32 MiB pipelined by a client that never reads its socket:
    the server must stop taking requests instead of buffering 3 GiB (the
    caller measures its memory while this client holds the connection)."""
    sock, size, _ = negotiate(host, port, export)
    expect(size >= 32 * MiB, "export too small for this scenario")
    sock.setblocking(False)
    sent = 0
    for cookie in range(100):
        request = struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, cookie, 0, 32 * MiB)
        try:
            sock.sendall(request)
            sent += 1
        except BlockingIOError:
            break  # the server stopped reading: exactly what backpressure means
    time.sleep(float(os.environ.get("MISBEHAVE_HOLD_SECONDS", "3")))
    ok(f"{sent} READs of 32 MiB sent without reading a reply; connection held")
    sock.close()


SCENARIOS = {f.__name__: f for f in (
    silent_client, reads_never_read,
    garbage_handshake, garbage_before_greeting, unknown_client_flags, unknown_option, huge_option_then_vanish,
    abort_option, request_before_go, bad_request_magic, truncated_header, disconnect_mid_write, oversize_write,
    absurd_write_length, oversize_read, unknown_command, unknown_command_structured, unknown_flags,
    out_of_order_cookies, many_connections_vanish)}


def main():
    if len(sys.argv) != 5 or sys.argv[4] not in SCENARIOS:
        print(f"usage: {sys.argv[0]} HOST PORT EXPORT SCENARIO\nscenarios: {' '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    host, port, export, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    try:
        SCENARIOS[name](host, port, export)
    except (Failure, EOFError, OSError) as e:
        print(f"FAIL: {name}: {e}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
