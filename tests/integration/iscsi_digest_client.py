#!/usr/bin/env python3
"""A minimal iSCSI initiator speaking header and data digests (CRC32C), which neither libiscsi
nor QEMU can do for data: logs in with HeaderDigest=CRC32C and DataDigest=CRC32C, takes the
power-on unit attention, writes a block with immediate data, reads it back, and checks every
digest lunad sends.  With
--corrupt-data it sends a wrong data digest and expects a Reject (reason 0x02) and the
connection's end.  With --ping (lunad's iscsi_ping_interval set to 1 s) it stays silent,
answers the target's first NOP-In ping and then stops answering: the target must ping again
and close the connection within a few intervals.  The PDU framing is iscsi_pdu.py's.

usage: iscsi_digest_client.py HOST PORT TARGET_IQN [--corrupt-data | --ping]
"""
import struct
import sys
import time

from iscsi_pdu import (Closed, Connection, DATA_IN, NOP_IN, REJECT, REJECT_DATA_DIGEST, RESERVED_TAG, describe,
                       itt_of, opcode)


def expect_ping(c, within):
    c.sock.settimeout(within)
    response, _ = c.recv_pdu()
    ttt = struct.unpack_from(">I", response, 20)[0]
    assert opcode(response) == NOP_IN and itt_of(response) == RESERVED_TAG and ttt != RESERVED_TAG, \
        f"expected a NOP-In ping: {response[:24].hex()}"
    return response


def ping(c):
    start = time.monotonic()
    c.answer_ping(expect_ping(c, 5))
    expect_ping(c, 5)  # silent again: another ping
    c.sock.settimeout(10)
    try:
        while c.recv_pdu():
            pass
    except Closed:
        pass
    print(f"pings: answered one, ignored the next; closed after {time.monotonic() - start:.1f} s")


def main():
    host, port, iqn = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    c = Connection(host, port)
    c.login(iqn, initiator="iqn.2026-12.org.luna.test:digests", digests=True, max_recv=8192)

    if "--ping" in sys.argv:
        ping(c)
        return
    c.take_unit_attention()

    block = bytes((i * 7) & 0xFF for i in range(512))
    if "--corrupt-data" in sys.argv:
        write = c.command(bytes([0x2A, 0, 0, 0, 0, 8, 0, 0, 1, 0]), write=512)  # WRITE(10) LBA 8, 1 block
        c.send(write, block, bad_data_digest=True)
        response, data = c.recv()
        assert opcode(response) == REJECT and response[2] == REJECT_DATA_DIGEST, \
            f"expected a data digest Reject, got {describe(response)}"
        assert c.expect_closed(), "the connection stayed open after a data digest error"
        print("data digest error: Rejected (0x02) and the connection closed")
        return
    c.write(8, block)
    status, _, data, response = c.scsi(bytes([0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0]), read=512)  # READ(10)
    assert status == 0 and opcode(response) == DATA_IN and response[1] & 0x01, \
        f"expected Data-In with status: {describe(response)}"
    assert data == block, "read back something else"
    print("header and data digests: login, WRITE with immediate data, READ, every digest checked")


if __name__ == "__main__":
    main()
