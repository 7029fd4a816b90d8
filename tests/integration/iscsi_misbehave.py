#!/usr/bin/python3
"""iscsi_misbehave: iSCSI initiators that break the protocol on purpose, on raw sockets.

Usage: iscsi_misbehave.py HOST PORT TARGET_IQN SCENARIO [ARG]

Each scenario opens a fresh connection, does one kind of wrong thing, and checks what lunad
answers as docs/iscsi.md and RFC 7143 describe it: a Reject PDU with the right reason that
carries the rejected header, the connection closed (EOF, no answer), or the PDU ignored (then a
NOP-Out ping or a SCSI command right after it still gets its answer, and nothing ever answers
the ignored PDU).  Whether lunad survives and still serves others is checked by the calling
script (test_iscsi_misbehave.sh).  Prints "ok: ..." per check; exits 1 with "FAIL: ..." on the
first wrong answer.  Two scenarios are not one-shot:

  good           a well-behaved session kept open: it logs in, prints "ready", then for each
                 line "check LABEL" on stdin writes 8 KiB (immediate data and R2T / Data-Out
                 in turn) to its own region (LBA 65536 on), reads them back, re-reads the
                 previous check's blocks, and prints "ok LABEL" or "FAIL LABEL: why"; it answers
                 the target's NOP-In pings meanwhile; "quit" logs out (prints "bye").
  flood [N]      N (300) connections that send nothing, half a BHS, or a login whose keys
                 continue (C bit) over 7 PDUs and then stop half-way; prints "held N" once
                 they are all in, then waits: each must be closed by lunad's 10 s login limit
                 (between 9.5 and 13 s after it connected), none earlier.
"""
import os
import random
import select
import socket
import struct
import sys
import time

from iscsi_pdu import (BHS, BLOCK, DATA_IN, FINAL, IMMEDIATE, LOGIN, LOGIN_RESPONSE, LOGOUT, LOGOUT_RESPONSE, NOP_IN,
                       NOP_OUT, R2T, REJECT, REJECT_COMMAND_NOT_SUPPORTED, REJECT_DATA_DIGEST,
                       REJECT_INVALID_PDU_FIELD, REJECT_PROTOCOL_ERROR, RESERVED_TAG, SCSI_RESPONSE, SNACK,
                       TASK_MANAGEMENT, TEXT, TEXT_RESPONSE, Closed, Connection, describe, itt_of, keys, login_pdu,
                       opcode)

TIMEOUT = 10.0
INITIATOR = "iqn.2026-12.org.luna.test:misbehave"
ISID = b"\x80\x00\x4d\x49\x53\x42"


class Failure(Exception):
    pass


def ok(message):
    print("ok:", message, flush=True)


def expect(condition, message):
    if not condition:
        raise Failure(message)


def session(host, port, iqn, digests=False, unit_attention=True, initiator=INITIATOR):
    """A logged-in normal session (the power-on unit attention taken)."""
    c = Connection(host, port, timeout=TIMEOUT)
    c.login(iqn, initiator=initiator, digests=digests, isid=ISID)
    if unit_attention:
        c.take_unit_attention()
    return c


def expect_reject(c, wire, reason, what):
    """The next PDU is a Reject for reason carrying the rejected header (wire: the PDU as sent)."""
    bhs, data = c.recv()
    expect(opcode(bhs) == REJECT, f"{what}: expected a Reject, got {describe(bhs)}")
    expect(bhs[2] == reason, f"{what}: Reject reason {bhs[2]:#04x}, expected {reason:#04x}")
    expect(itt_of(bhs) == RESERVED_TAG, f"{what}: the Reject's ITT is {itt_of(bhs):#x}, not 0xffffffff")
    expect(data == wire[:BHS], f"{what}: the Reject does not carry the rejected header "
                               f"({data[:48].hex()} instead of {wire[:BHS].hex()})")


def expect_eof(c, what, timeout=5.0):
    try:
        closed = c.expect_closed(timeout)
    except AssertionError as e:
        raise Failure(f"{what}: {e}")
    expect(closed, f"{what}: the connection is still open {timeout:.0f} s later")


def send_raw(c, data):
    """Send bytes; a target that closed the connection meanwhile is fine (the caller checks EOF)."""
    try:
        c.sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def pattern(seed, length):
    return bytes((seed * 131 + i * 7 + (i >> 9)) & 0xFF for i in range(length))


def read10(lba, blocks):
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba, blocks):
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


def login_bhs(flags=FINAL | (1 << 2) | 3):
    return login_pdu(ISID, flags)


def login_keys(iqn):
    return keys(InitiatorName=INITIATOR, TargetName=iqn, SessionType="Normal")


# --- scenarios --------------------------------------------------------------

def unknown_opcode(host, port, iqn):
    c = session(host, port, iqn)
    # Initiator opcodes RFC 7143 does not define, SNACK (ErrorRecoveryLevel 0), and target opcodes.
    for op, immediate, data in ((0x07, False, b""), (0x0C, True, b"x" * 37), (SNACK, False, b""),
                                (0x1C, False, b"abc"), (0x1F, True, b""), (NOP_IN, False, b"y" * 5),
                                (REJECT, False, b"")):
        bhs = c.header(op, immediate=immediate, cmd_sn=c.cmd_sn)  # takes no CmdSN
        wire = c.wire(bhs, data)
        c.sock.sendall(wire)
        expect_reject(c, wire, REJECT_COMMAND_NOT_SUPPORTED, f"opcode {op:#04x}")
    c.ping(b"still framed")
    expect(c.read(0, 1) is not None, "READ after the unknown opcodes")
    ok("unknown opcodes 0x07 0x0c 0x10 0x1c 0x1f 0x20 0x3f (with and without data): Reject 0x05 "
       "with the header echoed; the connection keeps working")


def truncated_bhs(host, port, iqn):
    c = Connection(host, port, timeout=TIMEOUT)
    c.sock.sendall(login_bhs()[:20])
    c.sock.shutdown(socket.SHUT_WR)
    expect_eof(c, "20 bytes of a Login BHS, then EOF")
    c = session(host, port, iqn)
    bhs = c.nop_out(itt=0x99)
    c.sock.sendall(bytes(bhs[:30]))
    c.sock.shutdown(socket.SHUT_WR)
    expect_eof(c, "30 bytes of a NOP-Out BHS, then EOF")
    ok("truncated BHS then EOF (before login and in full feature phase): closed, nothing answered")


def ahs_overlong(host, port, iqn):
    c = session(host, port, iqn)
    wire = c.wire(c.nop_out(itt=0x98), b"", ahs=bytes(64 * 4))  # TotalAHSLength 64: 256 bytes
    c.sock.sendall(wire[:BHS + 100])
    c.sock.shutdown(socket.SHUT_WR)
    expect_eof(c, "an AHS of 256 bytes announced, 100 sent, then EOF")
    ok("AHS length claiming 256 bytes, 100 sent, then EOF: closed, nothing answered")


def ahs_skipped(host, port, iqn):
    for digests in (False, True):
        c = session(host, port, iqn, digests=digests)
        ahs = struct.pack(">HBB", 5, 1, 0) + b"\x12\x34\x56\x78\x9a" + bytes(3)  # an extended-CDB AHS
        itt = c.itt()
        c.send(c.nop_out(itt=itt), b"through an AHS", ahs=ahs)
        bhs, data = c.recv()
        expect(opcode(bhs) == NOP_IN and itt_of(bhs) == itt and data == b"through an AHS",
               f"NOP-Out with an AHS{' (header digest)' if digests else ''}: {describe(bhs)} {data!r}")
        c.ping()
    ok("a well-formed AHS (with and without header digest) is skipped: the NOP-Out behind it is answered")


def oversize_segment(host, port, iqn):
    c = session(host, port, iqn)
    most = 262144  # lunad's MaxRecvDataSegmentLength
    c.ping(pattern(1, most))  # the limit itself is fine
    bhs = bytearray(c.nop_out(itt=0x97))
    bhs[5:8] = (most + 4).to_bytes(3, "big")
    send_raw(c, bytes(bhs) + b"z" * 1024)
    expect_eof(c, f"a NOP-Out announcing {most + 4} bytes")
    c = session(host, port, iqn)
    bhs = bytearray(c.command(write10(0, 32), write=16384, immediate=True, itt=0x96))
    bhs[5:8] = (0xFFFFFF).to_bytes(3, "big")
    send_raw(c, bytes(bhs) + b"z" * 4096)
    expect_eof(c, "a SCSI Command announcing 16 MiB of immediate data")
    ok(f"data segment of {most} bytes echoed; {most + 4} (NOP-Out) and 16 MiB (SCSI Command): closed")


def immediate_data_beyond(host, port, iqn):
    # More immediate data than FirstBurstLength (65536), and more than the expected transfer length.
    for edtl, blocks, length, what in ((131072, 256, 65536 + 512, "above FirstBurstLength"),
                                       (512, 1, 1024, "above the expected transfer length")):
        c = session(host, port, iqn)
        bhs = c.command(write10(0, blocks), write=edtl, itt=0x95)
        send_raw(c, c.wire(bhs, b"\xee" * length))
        expect_eof(c, f"immediate data {what}")
    ok("immediate data above FirstBurstLength or the expected transfer length: closed")


def login_oversize_segment(host, port, iqn):
    c = Connection(host, port, timeout=TIMEOUT)
    text = login_keys(iqn)
    c.send(login_bhs(), text + bytes(8192 - len(text)))  # NULs pad the keys to exactly 8192 bytes
    bhs, data = c.recv_pdu()
    expect(opcode(bhs) == LOGIN_RESPONSE and bhs[36] == 0, f"a login of exactly 8192 bytes: {describe(bhs)}")
    c = Connection(host, port, timeout=TIMEOUT)
    send_raw(c, c.wire(login_bhs(), text + bytes(8196 - len(text))))
    expect_eof(c, "a 8196-byte Login PDU")
    ok("login data segment of 8192 bytes accepted; 8196 bytes: closed without an answer")


def login_keys_too_long(host, port, iqn):
    """Keys continued (C bit) past 64 KiB: refused, closed."""
    c = Connection(host, port, timeout=TIMEOUT)
    continued = 0x40 | (1 << 2)
    for i in range(9):
        c.send(login_bhs(continued), b"a" * 8192)
        try:
            bhs, _ = c.recv_pdu()
        except Closed:
            expect(i == 8, f"closed after {i} continued PDUs of 8 KiB")
            break
        if bhs[36] != 0:
            expect(i == 8 and bhs[36] == 0x02, f"continued PDU {i}: {describe(bhs)} status {bhs[36]:#x}/{bhs[37]:#x}")
            expect_eof(c, "login keys above 64 KiB")
            break
    else:
        raise Failure("72 KiB of continued login keys accepted")
    ok("login keys continued over 8 PDUs (64 KiB) answered; the 9th: refused 0x0200 and closed")


def header_digest(host, port, iqn):
    c = session(host, port, iqn, digests=True)
    c.ping(b"digests on")
    c.send(c.nop_out(itt=0x94), b"bad header digest", bad_header_digest=True)
    expect_eof(c, "a wrong header digest")
    ok("wrong header digest: closed without an answer")


def data_digest(host, port, iqn):
    c = session(host, port, iqn, digests=True)
    bhs = c.nop_out(itt=0x93)
    wire = c.wire(bhs, b"bad data digest", bad_data_digest=True)
    c.sock.sendall(wire)
    expect_reject(c, wire, REJECT_DATA_DIGEST, "NOP-Out with a wrong data digest")
    expect_eof(c, "after the data digest Reject")
    # The same on a Data-Out for a live WRITE (the task gathering data goes away).
    c = session(host, port, iqn, digests=True)
    itt = c.itt()
    c.send(c.command(write10(200, 8), write=4096, itt=itt))
    r2t, _ = c.recv()
    expect(opcode(r2t) == R2T, f"WRITE without immediate data: expected an R2T, got {describe(r2t)}")
    ttt = struct.unpack_from(">I", r2t, 20)[0]
    wire = c.wire(c.data_out(itt, ttt, 0), b"\x5a" * 4096, bad_data_digest=True)
    c.sock.sendall(wire)
    expect_reject(c, wire, REJECT_DATA_DIGEST, "Data-Out with a wrong data digest")
    expect_eof(c, "after the Data-Out's data digest Reject")
    ok("wrong data digest (NOP-Out, Data-Out of a live WRITE): Reject 0x02 with the header, then closed")


def cmd_sn_window(host, port, iqn):
    c = session(host, port, iqn)
    old = pattern(2, 512)
    c.write(40, old)
    exp = c.cmd_sn
    ignored = []
    for what, cmd_sn, build, data in (
            ("NOP-Out CmdSN +1000", exp + 1000, lambda itt, sn: c.nop_out(itt=itt, immediate=False, cmd_sn=sn), b"p"),
            ("READ CmdSN +2^31", exp + 0x80000000, lambda itt, sn: c.command(read10(40, 1), read=512, itt=itt,
                                                                                cmd_sn=sn), b""),
            ("NOP-Out CmdSN -1", exp - 1, lambda itt, sn: c.nop_out(itt=itt, immediate=False, cmd_sn=sn), b""),
            ("WRITE CmdSN +5 with immediate data", exp + 5,
             lambda itt, sn: c.command(write10(40, 1), write=512, itt=itt, cmd_sn=sn), pattern(3, 512)),
            ("Text CmdSN +129", exp + 129, lambda itt, sn: text_at(c, itt, sn), b"SendTargets=\0")):
        itt = 0x5000 + len(ignored)
        c.send(build(itt, cmd_sn & 0xFFFFFFFF), data)
        ignored.append(itt)
    # The next valid command works (c.scsi asserts every PDU it gets is for its own task), and
    # the WRITE outside the window did not land.
    expect(c.read(40, 1) == old, "a WRITE with a CmdSN outside the window was executed")
    c.ping()
    expect(c.cmd_sn == (exp + 1) & 0xFFFFFFFF, f"ExpCmdSN is {c.cmd_sn}, expected {exp + 1}")
    ok("CmdSN outside the window (+1000, +2^31, -1, +5 with data, +129): ignored; the next command works")


def text_at(c, itt, cmd_sn):
    bhs = c.header(TEXT, itt=itt, cmd_sn=cmd_sn)
    struct.pack_into(">I", bhs, 20, RESERVED_TAG)
    return bhs


def data_out_unknown(host, port, iqn):
    c = session(host, port, iqn)
    c.send(c.data_out(0x7777, 0x1234, 0), b"\x66" * 1000)  # no such task
    c.send(c.data_out(0x7778, RESERVED_TAG, 4096, data_sn=3, final=False), b"\x66" * 3)
    c.ping(b"after Data-Out for nobody")
    itt = c.itt()
    c.write(300, pattern(4, 512))
    c.send(c.data_out(itt, 0, 0), b"\x66" * 512)  # a task that has ended (the WRITE's ITT was itt + 1)
    c.send(c.data_out(itt + 1, 0, 0), b"\x66" * 512)
    c.ping(b"after Data-Out for an ended task")
    expect(c.read(300, 1) == pattern(4, 512), "Data-Out for an ended task changed its data")
    ok("Data-Out for unknown and ended tasks: ignored (the data skipped), the connection keeps working")


def data_out_wrong(host, port, iqn):
    c = session(host, port, iqn)
    itt = c.itt()
    data = pattern(5, 4096)
    c.send(c.command(write10(48, 8), write=4096, itt=itt))
    r2t, _ = c.recv()
    expect(opcode(r2t) == R2T and itt_of(r2t) == itt, f"expected an R2T, got {describe(r2t)}")
    ttt = struct.unpack_from(">I", r2t, 20)[0]
    offset, length = struct.unpack_from(">II", r2t, 40)
    expect(offset == 0 and length == 4096, f"R2T for offset {offset} length {length}")
    for what, bhs, segment in (
            ("wrong TTT", c.data_out(itt, ttt ^ 0x5555, 0), data[:512]),
            ("offset 512 (a gap)", c.data_out(itt, ttt, 512), data[512:1024]),
            ("8192 bytes for an R2T of 4096", c.data_out(itt, ttt, 0), data + data),
            ("offset beyond the transfer", c.data_out(itt, ttt, 0x7FFFFF00), data[:256])):
        wire = c.wire(bhs, segment)
        c.sock.sendall(wire)
        expect_reject(c, wire, REJECT_PROTOCOL_ERROR, f"Data-Out with {what}")
    c.send(c.data_out(itt, ttt, 0), data)
    response, _ = c.recv()
    expect(opcode(response) == SCSI_RESPONSE and response[3] == 0 and itt_of(response) == itt,
           f"the WRITE after the bad Data-Outs: {describe(response)}")
    expect(c.read(48, 8) == data, "the WRITE's data is not what the right Data-Out carried")
    # A wrong DataSN fails the command (ABORTED COMMAND, DATA PHASE ERROR); its later data is dropped.
    itt = c.itt()
    c.send(c.command(write10(56, 8), write=4096, itt=itt))
    r2t, _ = c.recv()
    ttt = struct.unpack_from(">I", r2t, 20)[0]
    c.send(c.data_out(itt, ttt, 0, data_sn=5), data)
    response, sense = c.recv()
    expect(opcode(response) == SCSI_RESPONSE and response[3] == 0x02 and len(sense) > 14 and
           sense[2 + 2] & 0x0F == 0x0B and sense[2 + 12] == 0x4B,
           f"Data-Out with a wrong DataSN: {describe(response)} sense {sense.hex()}")
    c.send(c.data_out(itt, ttt, 0), data)
    c.ping(b"after")
    ok("Data-Out with a wrong TTT, a gap, too much data, a wild offset: Reject 0x04 each, then the right "
       "one completes the WRITE; a wrong DataSN: ABORTED COMMAND / 4B 00")


def discovery_scsi(host, port, iqn):
    c = Connection(host, port, timeout=TIMEOUT)
    c.login(discovery=True, initiator=INITIATOR, isid=ISID)
    for what, bhs, data in (
            ("READ(10)", c.command(read10(0, 1), read=512, cmd_sn=c.cmd_sn), b""),
            ("WRITE(10) with immediate data", c.command(write10(0, 1), write=512, cmd_sn=c.cmd_sn), b"\0" * 512),
            ("TEST UNIT READY, immediate", c.command(bytes(6), immediate=True), b""),
            ("Task Management", c.header(TASK_MANAGEMENT, flags=FINAL | 1, cmd_sn=c.cmd_sn), b"")):
        wire = c.wire(bhs, data)
        c.sock.sendall(wire)
        expect_reject(c, wire, REJECT_PROTOCOL_ERROR, f"{what} in a discovery session")
    c.send(c.data_out(0x10, 0x20, 0), b"\0" * 512)  # nothing to write to: ignored, or Rejected
    c.send(c.text(), keys(SendTargets="All"))
    bhs, data = c.recv()
    if opcode(bhs) == REJECT:
        expect(bhs[2] == REJECT_PROTOCOL_ERROR, f"Data-Out in a discovery session: {describe(bhs)}")
        data_out = "Rejected"
        bhs, data = c.recv()
    else:
        data_out = "ignored"
    expect(opcode(bhs) == TEXT_RESPONSE and f"TargetName={iqn}".encode() in data,
           f"SendTargets after the Rejects: {describe(bhs)} {data!r}")
    ok(f"SCSI commands and Task Management in a discovery session: Reject 0x04 (Data-Out: {data_out}); "
       "SendTargets still answered")


def login_in_full_feature(host, port, iqn):
    c = session(host, port, iqn)
    bhs = login_pdu(ISID, FINAL | (1 << 2) | 3, itt=c.itt(), cmd_sn=c.cmd_sn)
    wire = c.wire(bhs, login_keys(iqn))
    c.sock.sendall(wire)
    expect_reject(c, wire, REJECT_PROTOCOL_ERROR, "a Login PDU in the full feature phase")
    c.ping(b"after the second login")
    c.read(0, 1)
    ok("a second Login PDU in the full feature phase: Reject 0x04, the session goes on")


def text_exchange(c, data, flags=FINAL, ttt=RESERVED_TAG):
    """Send a Text request; the whole answer (following continuations): ('answer', keys) or ('reject', reason)."""
    bhs = c.text(ttt=ttt, flags=flags)
    wire = c.wire(bhs, data)
    c.sock.sendall(wire)
    answer = b""
    while True:
        response, segment = c.recv()
        if opcode(response) == REJECT:
            expect(segment == wire[:BHS], "a Text Reject without the rejected header")
            return "reject", response[2]
        expect(opcode(response) == TEXT_RESPONSE and itt_of(response) == itt_of(bhs),
               f"expected a Text Response: {describe(response)}")
        answer += segment
        if response[1] & FINAL:
            return "answer", answer
        expect(response[1] & 0x40, "a Text Response with neither F nor C")
        bhs = c.text(ttt=struct.unpack_from(">I", response, 20)[0])
        struct.pack_into(">I", bhs, 16, itt_of(response))
        c.send(bhs)


def text_garbage(host, port, iqn):
    c = session(host, port, iqn)
    rng = random.Random(7)
    outcomes = []
    for what, data, flags, ttt, want in (
            ("no '='", b"garbage\0", FINAL, RESERVED_TAG, ("reject", REJECT_PROTOCOL_ERROR)),
            ("empty key", b"=value\0", FINAL, RESERVED_TAG, ("reject", REJECT_PROTOCOL_ERROR)),
            ("binary key and value", b"\xff\xfe\x01=\x80\x81\0Foo=Bar\0", FINAL, RESERVED_TAG, "answer"),
            ("a 200-byte key", b"K" * 200 + b"=1\0", FINAL, RESERVED_TAG, ("reject", REJECT_PROTOCOL_ERROR)),
            ("a 9000-byte value", b"K=" + b"v" * 9000 + b"\0", FINAL, RESERVED_TAG, ("reject", REJECT_PROTOCOL_ERROR)),
            ("no terminating NUL", b"SendTargets=", FINAL, RESERVED_TAG, "answer"),
            ("only NULs", b"\0" * 64, FINAL, RESERVED_TAG, "answer"),
            ("SendTargets=All in a normal session", b"SendTargets=All\0", FINAL, RESERVED_TAG, "answer"),
            ("random bytes", bytes(rng.randrange(256) for _ in range(3000)), FINAL, RESERVED_TAG, None),
            ("the C bit", b"SendTargets=All\0", 0x40, RESERVED_TAG, ("reject", REJECT_COMMAND_NOT_SUPPORTED)),
            ("an unknown TTT", b"", FINAL, 0x1234, ("reject", REJECT_INVALID_PDU_FIELD)),
            ("200 KiB of unknown keys (a 800 KiB answer)", b"k=v\0" * 51200, FINAL, RESERVED_TAG, "answer")):
        kind, detail = text_exchange(c, data, flags, ttt)
        if isinstance(want, tuple):
            expect((kind, detail) == want, f"Text with {what}: {kind} {detail!r:.60}, expected {want}")
        elif want == "answer":
            expect(kind == "answer", f"Text with {what}: {kind} {detail!r:.60}, expected an answer")
        outcomes.append(f"{what}: {kind}" + (f" {detail:#04x}" if kind == "reject" else f" ({len(detail)} bytes)"))
        if what.startswith("binary"):
            expect(b"Foo=NotUnderstood\0" in detail, f"binary keys: {detail!r}")
        if what.startswith("SendTargets=All"):
            expect(detail == b"SendTargets=Reject\0", f"SendTargets=All in a normal session: {detail!r}")
        if what.startswith("200 KiB"):
            expect(detail == b"k=NotUnderstood\0" * 51200, "the continued answer to 51200 keys is wrong")
    c.ping(b"after the garbage")
    for outcome in outcomes:
        print("   ", outcome)
    ok("Text requests with garbage keys: answered or Rejected as expected; the session goes on")


def random_bytes(host, port, iqn, logged_in):
    """Random bytes from a few seeds, then EOF: lunad answers what it makes of them and closes."""
    seeds = (11, 12, 13) if logged_in else (1, 2, 3)
    results = []
    for seed in seeds:
        rng = random.Random(seed)
        c = session(host, port, iqn) if logged_in else Connection(host, port, timeout=TIMEOUT)
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1000, 8000)))
        send_raw(c, blob)
        try:
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        c.sock.settimeout(10)
        got, deadline = 0, time.monotonic() + 10
        while True:
            try:
                chunk = c.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except socket.timeout:
                raise Failure(f"seed {seed}: connection still open 10 s after random bytes and EOF")
            if not chunk:
                break
            got += len(chunk)
            expect(time.monotonic() < deadline, f"seed {seed}: still sending 10 s after EOF")
        results.append(f"seed {seed}: {len(blob)} bytes sent, {got} answered, closed")
    ok(f"random bytes {'after login' if logged_in else 'at connect'}: " + "; ".join(results))


def random_at_connect(host, port, iqn):
    random_bytes(host, port, iqn, False)


def random_after_login(host, port, iqn):
    random_bytes(host, port, iqn, True)


def split_pdus(buffer):
    """Complete PDUs (no digests) at the front of buffer: ([bhs...], the rest)."""
    pdus = []
    while len(buffer) >= BHS:
        length = int.from_bytes(buffer[5:8], "big")
        total = BHS + buffer[4] * 4 + length + (-length % 4)
        if len(buffer) < total:
            break
        pdus.append(bytes(buffer[:BHS]))
        buffer = buffer[total:]
    return pdus, buffer


def mutated(host, port, iqn, first="21", count="3"):
    """Valid PDUs with 1 to 3 bytes of their first 32 changed (never the lengths, so the framing
    holds, nor the CDB, so writes stay in LBAs 0..63), 300 per seed, replies read as they come:
    whatever lunad makes of each, it must then answer a ping or close the connection.  Seeds
    FIRST .. FIRST + COUNT - 1 (21, 3)."""
    summary = []
    for seed in range(int(first), int(first) + int(count)):
        rng = random.Random(seed)
        c = session(host, port, iqn)
        c.sock.setblocking(False)
        buffer = b""
        answers = 0
        closed = False
        sent = 0
        for i in range(300):
            kind = rng.randrange(7)
            itt = 0x100 + i
            if kind == 0:
                bhs, data = c.nop_out(itt=itt, immediate=rng.random() < 0.5), b"n" * rng.randrange(0, 40)
            elif kind == 1:
                bhs, data = c.command(read10(rng.randrange(64), 1), read=512, itt=itt), b""
            elif kind == 2:
                bhs, data = c.command(write10(rng.randrange(64), 1), write=512, itt=itt), pattern(i, 512)
            elif kind == 3:
                bhs, data = c.command(bytes(6), itt=itt), b""
            elif kind == 4:
                bhs, data = c.text(), b"SendTargets=\0"
            elif kind == 5:
                bhs, data = c.data_out(0x100 + rng.randrange(i + 1), rng.randrange(4), 0), b"d" * 512
            else:
                bhs = c.header(TASK_MANAGEMENT, flags=FINAL | rng.choice((1, 2, 4, 5, 6, 8)), itt=itt)
                struct.pack_into(">I", bhs, 20, 0x100 + rng.randrange(i + 1))
                data = b""
            for _ in range(rng.randrange(1, 4)):
                at = rng.choice([p for p in range(32) if p not in (4, 5, 6, 7)])
                bhs[at] = rng.randrange(256)
            if opcode(bhs) in (LOGOUT, LOGIN) or (opcode(bhs) == TASK_MANAGEMENT and bhs[1] & 0x7F == 7):
                bhs[0] = NOP_OUT | IMMEDIATE  # no Logout or cold reset: keep the session going a while
            try:
                c.sock.sendall(c.wire(bhs, data))
                sent += 1
                while True:
                    chunk = c.sock.recv(65536)
                    if not chunk:
                        closed = True
                        break
                    buffer += chunk
            except (BlockingIOError, InterruptedError):
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            pdus, buffer = split_pdus(buffer)
            answers += len(pdus)
            if closed:
                break
        outcome = f"seed {seed}: closed by lunad after {sent} PDUs ({answers} answers)"
        if not closed:
            # The final ping: whatever else comes first, its NOP-In must follow (or the end).
            c.sock.setblocking(True)
            c.sock.settimeout(10)
            itt = 0xABCDEF
            try:
                c.send(c.nop_out(itt=itt), b"final")
                done = False
                while not done:
                    chunk = c.sock.recv(65536)
                    if not chunk:
                        outcome = f"seed {seed}: {sent} PDUs ({answers} answers), closed before the final ping"
                        break
                    pdus, buffer = split_pdus(buffer + chunk)
                    answers += len(pdus)
                    done = any(opcode(p) == NOP_IN and itt_of(p) == itt for p in pdus)
                    if done:
                        outcome = f"seed {seed}: {sent} PDUs ({answers} answers), the final ping answered"
            except (BrokenPipeError, ConnectionResetError):
                outcome = f"seed {seed}: {sent} PDUs ({answers} answers), closed before the final ping"
            except socket.timeout:
                raise Failure(f"seed {seed}: neither the final ping answered nor the connection closed")
        summary.append(outcome)
        c.close()
    ok("mutated PDU headers: " + "; ".join(summary))


def logout_then_more(host, port, iqn):
    c = session(host, port, iqn)
    itt = c.itt()
    logout = c.header(LOGOUT, flags=FINAL | 0, immediate=True, itt=itt)  # reason 0: close the session
    c.sock.sendall(c.wire(logout) + c.wire(c.nop_out(itt=0x92), b"after logout") +
                   c.wire(c.command(read10(0, 1), read=512, itt=0x91)))
    response, _ = c.recv()
    expect(opcode(response) == LOGOUT_RESPONSE and itt_of(response) == itt and response[2] == 0,
           f"Logout: {describe(response)}")
    expect_eof(c, "PDUs after a Logout")
    ok("PDUs after a Logout: not answered, the connection closes")


def reads_never_read(host, port, iqn):
    """128 READs of 32 MiB (the whole CmdSN window) from an initiator that never reads its
    socket: the caller watches lunad's memory while this holds the connection.  Without a bound
    lunad would read each into its own 32 MiB buffer, 4 GiB for this one connection; past
    256 MiB of buffers it answers TASK SET FULL."""
    c = session(host, port, iqn)
    c.sock.setblocking(False)
    sent = 0
    for _ in range(128):
        try:
            c.sock.sendall(c.wire(c.command(read10(0, 65535), read=65535 * BLOCK)))
            sent += 1
        except BlockingIOError:
            break
    time.sleep(float(os.environ.get("MISBEHAVE_HOLD_SECONDS", "3")))
    # Now read every answer: the commands beyond lunad's buffer bound got TASK SET FULL, the
    # others their data and GOOD.
    c.sock.setblocking(True)
    c.sock.settimeout(TIMEOUT)
    answered, full = set(), 0
    while len(answered) < sent:
        bhs, _ = c.recv_pdu()
        op = opcode(bhs)
        if op == SCSI_RESPONSE or (op == DATA_IN and bhs[1] & 0x01):
            answered.add(itt_of(bhs))
            full += bhs[3] == 0x28
            expect(bhs[3] in (0x00, 0x28), f"READ {itt_of(bhs):#x}: status {bhs[3]:#x}")
    expect(full >= sent // 2, f"only {full} of {sent} READs got TASK SET FULL: nothing bounds lunad's buffers")
    ok(f"{sent} READs of 32 MiB sent and left unread for a while: {sent - full} answered, {full} TASK SET FULL")
    c.close()


# --- the well-behaved session and the flood ----------------------------------

def good(host, port, iqn):
    c = session(host, port, iqn, initiator="iqn.2026-12.org.luna.test:good")
    print("ready", flush=True)
    checks = 0
    previous = None
    while True:
        readable, _, _ = select.select([sys.stdin, c.sock], [], [])
        if c.sock in readable:
            c.sock.settimeout(TIMEOUT)
            try:
                bhs, _ = c.recv_pdu()
            except Closed:
                print("FAIL: the good session was closed by lunad", flush=True)
                return 1
            if opcode(bhs) == NOP_IN and itt_of(bhs) == RESERVED_TAG:
                c.answer_ping(bhs)
                continue
            print(f"FAIL: an unexpected PDU on the good session: {describe(bhs)}", flush=True)
            return 1
        line = sys.stdin.readline().split()
        if not line or line[0] == "quit":
            bhs = c.header(LOGOUT, flags=FINAL, immediate=True)
            c.send(bhs)
            response, _ = c.recv()
            if opcode(response) != LOGOUT_RESPONSE or response[2] != 0:
                print(f"FAIL: logout: {describe(response)}", flush=True)
                return 1
            print(f"bye ({checks} checks, {c.pings} pings answered)", flush=True)
            return 0
        label = line[1] if len(line) > 1 else "-"
        checks += 1
        lba = 65536 + (checks % 1024) * 16
        data = pattern(checks, 16 * BLOCK)
        started = time.monotonic()
        try:
            c.write(lba, data, immediate_data=checks % 2 == 0)
            expect(c.read(lba, 16) == data, "read back something else")
            if previous:
                expect(c.read(previous[0], 16) == previous[1], "the previous check's blocks changed")
            previous = (lba, data)
        except Exception as e:  # noqa: BLE001 - reported to the script, which fails the test
            print(f"FAIL {label}: {type(e).__name__}: {e}", flush=True)
            return 1
        print(f"ok {label} ({(time.monotonic() - started) * 1000:.0f} ms)", flush=True)


def flood(host, port, iqn, count="300"):
    count = int(count)
    socks = {}
    half_login = login_bhs()
    continued = login_bhs(0x40 | (1 << 2))
    for i in range(count):
        s = socket.create_connection((host, port), timeout=TIMEOUT)
        kind = i % 3
        if kind == 1:
            s.sendall(half_login[:24])
        elif kind == 2:
            # 7 PDUs of keys continued (C bit), 56 KiB for lunad to gather, then half of the 8th.
            pdu = bytearray(continued)
            pdu[5:8] = (8192).to_bytes(3, "big")
            s.sendall((bytes(pdu) + b"K" * 8192) * 7 + bytes(pdu) + b"K" * 4000)
        s.setblocking(False)
        socks[s] = {"kind": kind, "connected": time.monotonic(), "answers": b""}
    print(f"held {count}", flush=True)
    closed = {}
    deadline = time.monotonic() + 20
    open_socks = list(socks)
    while open_socks and time.monotonic() < deadline:
        readable, _, _ = select.select(open_socks, [], [], 0.5)
        for s in readable:
            try:
                chunk = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                socks[s]["answers"] += chunk
                continue
            closed[s] = time.monotonic() - socks[s]["connected"]
            open_socks.remove(s)
    expect(not open_socks, f"{len(open_socks)} of {count} half-open logins still open 20 s later")
    for s, info in socks.items():
        if info["kind"] == 2:
            answers = info["answers"]
            expect(len(answers) == 7 * BHS and all(answers[i] == LOGIN_RESPONSE for i in range(0, len(answers), BHS)),
                   f"a continued login got {len(answers)} bytes back, expected 7 empty Login Responses")
        else:
            expect(not info["answers"], f"a silent or half-BHS connection got {len(info['answers'])} bytes")
        s.close()
    times = sorted(closed.values())
    expect(times[0] >= 9.5, f"a half-open login was closed after {times[0]:.1f} s, before the 10 s limit")
    expect(times[-1] <= 13.0, f"a half-open login was closed only after {times[-1]:.1f} s")
    ok(f"{count} half-open logins (nothing, half a BHS, 56 KiB of continued keys): each closed "
       f"{times[0]:.1f}-{times[-1]:.1f} s after it connected")


SCENARIOS = {f.__name__: f for f in (
    unknown_opcode, truncated_bhs, ahs_overlong, ahs_skipped, oversize_segment, immediate_data_beyond,
    login_oversize_segment, login_keys_too_long, header_digest, data_digest, cmd_sn_window, data_out_unknown,
    data_out_wrong, discovery_scsi, login_in_full_feature, text_garbage, random_at_connect, random_after_login,
    mutated, logout_then_more, reads_never_read, good, flood)}


def main():
    if len(sys.argv) < 5 or sys.argv[4] not in SCENARIOS:
        print(f"usage: {sys.argv[0]} HOST PORT TARGET_IQN SCENARIO [ARG]\nscenarios: {' '.join(SCENARIOS)}",
              file=sys.stderr)
        return 2
    host, port, iqn, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    try:
        return SCENARIOS[name](host, port, iqn, *sys.argv[5:]) or 0
    except (Failure, AssertionError, Closed, OSError) as e:
        print(f"FAIL: {name}: {type(e).__name__}: {e}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
