"""iscsi_reservations: persistent reservations, session reinstatement and the shutdown's
Asynchronous Message, seen by two initiators on raw sockets (iscsi_pdu.py).

  iscsi_reservations.py HOST PORT IQN before    register both (APTPL), A reserves; conflicts;
                                                registrations outlive a logout; reinstatement
  iscsi_reservations.py HOST PORT IQN shutdown  log in, print "ready", then expect lunad's
                                                Asynchronous Message (drop connection) and EOF
  iscsi_reservations.py HOST PORT IQN after     (a restarted lunad) the same reservations;
                                                CLEAR, and B's RESERVATIONS PREEMPTED attention
Exit status 0 when every check holds; an AssertionError names the one that did not.
"""
import struct
import sys

from iscsi_pdu import ASYNC_MESSAGE, BLOCK, Closed, Connection, describe, opcode

A = "iqn.2026-12.org.luna.test:host-a"
B = "iqn.2026-12.org.luna.test:host-b"
ISID_A = b"\x80\x00\x00\x00\x00\x0a"
ISID_B = b"\x80\x00\x00\x00\x00\x0b"
KEY_A, KEY_B = 0xAA, 0xBB
WRITE_EXCLUSIVE = 1
GOOD, CHECK_CONDITION, RESERVATION_CONFLICT = 0x00, 0x02, 0x18


def session(host, port, iqn, initiator, isid):
    connection = Connection(host, port)
    connection.login(iqn, initiator=initiator, isid=isid)
    return connection


def attentions(connection):
    """Take every pending unit attention with TEST UNIT READY: their (ASC, ASCQ), in order."""
    taken = []
    for _ in range(8):
        status, sense, _, _ = connection.scsi(bytes(6))
        if status == GOOD:
            return taken
        assert status == CHECK_CONDITION and sense[2] & 0x0F == 6, \
            f"TEST UNIT READY: status {status:#x} sense {sense.hex()}"
        taken.append((sense[12], sense[13]))
    raise AssertionError(f"unit attentions without end: {taken}")


def pr_out(connection, action, key, service_key, type_=0, aptpl=False):
    cdb = struct.pack(">BBBxxIB", 0x5F, action, type_, 24, 0)
    parameters = struct.pack(">QQ4xBxxx", key, service_key, 0x01 if aptpl else 0)
    status, sense, _, _ = connection.scsi(cdb, data=parameters)
    return status, sense


def pr_in(connection, action):
    cdb = struct.pack(">BB5xHx", 0x5E, action, 1024)
    status, sense, data, _ = connection.scsi(cdb, read=1024)
    assert status == GOOD, f"PERSISTENT RESERVE IN {action}: status {status:#x} sense {sense.hex()}"
    return data


def keys(connection):
    data = pr_in(connection, 0)
    length = struct.unpack_from(">I", data, 4)[0]
    return sorted(struct.unpack_from(">Q", data, 8 + i)[0] for i in range(0, length, 8))


def reservation(connection):
    """(key, type) of the reservation, or None."""
    data = pr_in(connection, 1)
    if struct.unpack_from(">I", data, 4)[0] == 0:
        return None
    return struct.unpack_from(">Q", data, 8)[0], data[21] & 0x0F


def write_status(connection, lba=8):
    cdb = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, 1, 0)
    status, _, _, _ = connection.scsi(cdb, data=bytes([0x5A]) * BLOCK)
    return status


def check(condition, message):
    if not condition:
        raise AssertionError(message)
    print(f"ok: {message}", flush=True)


def before(host, port, iqn):
    a = session(host, port, iqn, A, ISID_A)
    b = session(host, port, iqn, B, ISID_B)
    check(attentions(a) == [(0x29, 0)] and attentions(b) == [(0x29, 0)], "power-on unit attention, once each")
    capabilities = pr_in(a, 2)
    check(capabilities[2] & 0x01 and not capabilities[3] & 0x01, "REPORT CAPABILITIES: PTPL_C, not yet PTPL_A")
    check(pr_out(a, 0, 0, KEY_A, aptpl=True)[0] == GOOD, "A registers with APTPL")
    check(pr_out(b, 0, 0, KEY_B, aptpl=True)[0] == GOOD, "B registers with APTPL")
    check(pr_out(a, 1, KEY_A, 0, type_=WRITE_EXCLUSIVE)[0] == GOOD, "A reserves (write exclusive)")
    check(pr_in(b, 2)[3] & 0x01, "REPORT CAPABILITIES: PTPL_A")
    check(write_status(b) == RESERVATION_CONFLICT, "B's WRITE: RESERVATION CONFLICT")
    check(write_status(a) == GOOD, "A's WRITE: GOOD")

    b.close()  # the connection drops without a logout: B's registration stays
    b = session(host, port, iqn, B, ISID_B)
    check(attentions(b) == [], "B's nexus is known: no unit attention after reconnecting")
    check(keys(b) == [KEY_A, KEY_B], "the registrations outlived B's connection")

    # Reinstatement: A logs in again with the same ISID while its first session looks alive.
    a2 = session(host, port, iqn, A, ISID_A)
    check(a.expect_closed(timeout=5), "the new login of A's nexus closed A's old session")
    check(write_status(a2) == GOOD, "the reinstated session of A still holds the reservation")
    check(reservation(a2) == (KEY_A, WRITE_EXCLUSIVE), "READ RESERVATION: A's key, write exclusive")
    a2.close()
    b.close()


def shutdown(host, port, iqn):
    a = session(host, port, iqn, A, ISID_A)
    attentions(a)
    print("ready", flush=True)
    a.sock.settimeout(60)
    bhs, _ = a.recv_pdu()
    check(opcode(bhs) == ASYNC_MESSAGE, f"an Asynchronous Message at SIGTERM: {describe(bhs)}")
    event, parameter2 = bhs[36], struct.unpack_from(">H", bhs, 40)[0]
    check(event == 2 and parameter2 >= 2, f"AsyncEvent 2 (dropping the connection), Time2Wait {parameter2}")
    try:
        bhs, _ = a.recv_pdu()
    except Closed:
        print("ok: then the connection closed", flush=True)
        return
    raise AssertionError(f"expected the connection to close, got {describe(bhs)}")


def after(host, port, iqn):
    a = session(host, port, iqn, A, ISID_A)
    b = session(host, port, iqn, B, ISID_B)
    check(attentions(a) == [(0x29, 0)] and attentions(b) == [(0x29, 0)], "a restarted lunad: power-on attention")
    check(keys(a) == [KEY_A, KEY_B], "APTPL: both registrations survived the restart")
    check(reservation(b) == (KEY_A, WRITE_EXCLUSIVE), "APTPL: A's reservation survived the restart")
    check(write_status(b) == RESERVATION_CONFLICT, "B's WRITE still conflicts")
    check(write_status(a) == GOOD, "A's WRITE: GOOD")
    check(pr_out(a, 3, KEY_A, 0)[0] == GOOD, "A clears every registration and the reservation")
    check(attentions(b) == [(0x2A, 0x03)], "B is told: RESERVATIONS PREEMPTED")
    check(write_status(b) == GOOD, "B writes once more")
    check(keys(a) == [], "no registration left")
    a.close()
    b.close()


def main():
    host, port, iqn, phase = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    {"before": before, "shutdown": shutdown, "after": after}[phase](host, port, iqn)


if __name__ == "__main__":
    main()
