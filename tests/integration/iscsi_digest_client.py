#!/usr/bin/env python3
"""A minimal iSCSI initiator speaking header and data digests (CRC32C), which neither libiscsi
nor QEMU can do for data: logs in with HeaderDigest=CRC32C and DataDigest=CRC32C, takes the
power-on unit attention, writes a block with immediate data, reads it back, and checks every
digest lunad sends.  With
--corrupt-data it sends a wrong data digest and expects a Reject (reason 0x02) and the
connection's end.  With --ping (lunad's iscsi_ping_interval set to 1 s) it stays silent,
answers the target's first NOP-In ping and then stops answering: the target must ping again
and close the connection within a few intervals.

usage: iscsi_digest_client.py HOST PORT TARGET_IQN [--corrupt-data | --ping]
"""
import time
import socket
import struct
import sys


def crc32c_table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


TABLE = crc32c_table()


def digest(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return struct.pack("<I", crc ^ 0xFFFFFFFF)


def pad(data):
    return data + b"\0" * (-len(data) % 4)


class Connection:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.digests = False

    def send(self, bhs, data=b""):
        bhs = bytearray(bhs)
        bhs[5:8] = len(data).to_bytes(3, "big")
        out = bytes(bhs)
        if self.digests:
            out += digest(bytes(bhs))
        if data:
            out += pad(data)
            if self.digests:
                out += digest(pad(data))
        self.sock.sendall(out)

    def recv_exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError("connection closed")
            out += chunk
        return out

    def recv(self):
        bhs = self.recv_exact(48)
        if self.digests and self.recv_exact(4) != digest(bhs):
            raise AssertionError("bad header digest from the target")
        length = int.from_bytes(bhs[5:8], "big")
        data = b""
        if length:
            padded = self.recv_exact(length + (-length % 4))
            if self.digests and self.recv_exact(4) != digest(padded):
                raise AssertionError("bad data digest from the target")
            data = padded[:length]
        return bhs, data


def keys(**pairs):
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs.items())


def expect_ping(c, within):
    c.sock.settimeout(within)
    response, _ = c.recv()
    itt, ttt = struct.unpack_from(">II", response, 16)
    assert response[0] & 0x3F == 0x20 and itt == 0xFFFFFFFF and ttt != 0xFFFFFFFF, \
        f"expected a NOP-In ping: {response[:24].hex()}"
    return response


def ping(c, stat_sn):
    start = time.monotonic()
    response = expect_ping(c, 5)
    answer = bytearray(48)
    answer[0] = 0x40  # immediate NOP-Out
    answer[1] = 0x80
    answer[8:16] = response[8:16]
    struct.pack_into(">II", answer, 16, 0xFFFFFFFF, struct.unpack_from(">I", response, 20)[0])
    struct.pack_into(">II", answer, 24, 1, stat_sn + 1)
    c.send(answer)
    expect_ping(c, 5)  # silent again: another ping
    c.sock.settimeout(10)
    try:
        while c.recv():
            pass
    except (EOFError, ConnectionResetError):
        pass
    print(f"pings: answered one, ignored the next; closed after {time.monotonic() - start:.1f} s")


def main():
    host, port, iqn = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    corrupt = "--corrupt-data" in sys.argv
    c = Connection(host, port)
    isid = bytes([0x80, 0, 0x12, 0x34, 0, 1])
    # Operational stage straight to full feature (no security stage: AuthMethod None by default).
    bhs = bytearray(48)
    bhs[0] = 0x43
    bhs[1] = 0x80 | (1 << 2) | 3
    bhs[8:14] = isid
    struct.pack_into(">II", bhs, 16, 1, 0)  # ITT, CID
    struct.pack_into(">II", bhs, 24, 1, 0)  # CmdSN, ExpStatSN
    c.send(bhs, keys(InitiatorName="iqn.2026-12.org.luna.test:digests", TargetName=iqn, SessionType="Normal",
                      HeaderDigest="CRC32C,None", DataDigest="CRC32C,None", MaxRecvDataSegmentLength=8192))
    response, data = c.recv()
    answer = dict(kv.split("=", 1) for kv in data.decode().split("\0") if kv)
    assert response[0] == 0x23 and response[36] == 0, f"login failed: status {response[36]:#x}/{response[37]:#x}"
    assert answer.get("HeaderDigest") == "CRC32C" and answer.get("DataDigest") == "CRC32C", answer
    stat_sn = struct.unpack_from(">I", response, 24)[0]
    c.digests = True

    if "--ping" in sys.argv:
        ping(c, stat_sn)
        return
    # The nexus's first command gets the power-on unit attention (sense key 6, ASC 29): take it.
    tur = bytearray(48)
    tur[0] = 0x01
    tur[1] = 0x80
    struct.pack_into(">III", tur, 16, 9, 0, 1)  # ITT, EDTL, CmdSN
    struct.pack_into(">I", tur, 28, stat_sn + 1)
    c.send(tur)
    response, sense = c.recv()
    assert response[0] & 0x3F == 0x21 and response[3] == 0x02, f"expected CHECK CONDITION: {response[:4].hex()}"
    assert sense[2 + 2] & 0x0F == 6 and sense[2 + 12] == 0x29, f"expected a power-on unit attention: {sense.hex()}"
    stat_sn += 1

    block = bytes((i * 7) & 0xFF for i in range(512))
    write = bytearray(48)
    write[0] = 0x01
    write[1] = 0x80 | 0x20  # F, W
    struct.pack_into(">III", write, 16, 2, 512, 2)  # ITT, EDTL, CmdSN
    struct.pack_into(">I", write, 28, stat_sn + 1)
    write[32:42] = bytes([0x2A, 0, 0, 0, 0, 8, 0, 0, 1, 0])  # WRITE(10) LBA 8, 1 block
    if corrupt:
        bhs = bytes(write)
        wire = bytearray(write)
        wire[5:8] = (512).to_bytes(3, "big")
        wire = bytes(wire)
        c.sock.sendall(wire + digest(wire) + block + b"\xde\xad\xbe\xef")
        response, data = c.recv()
        assert response[0] & 0x3F == 0x3F and response[2] == 0x02, f"expected a data digest Reject, got {response[:4].hex()}"
        try:
            while True:
                c.recv()
        except (EOFError, ConnectionResetError):
            pass
        print("data digest error: Rejected (0x02) and the connection closed")
        return
    c.send(write, block)
    response, _ = c.recv()
    assert response[0] & 0x3F == 0x21 and response[3] == 0, f"WRITE failed: {response[:4].hex()}"

    read = bytearray(48)
    read[0] = 0x01
    read[1] = 0x80 | 0x40  # F, R
    struct.pack_into(">III", read, 16, 3, 512, 3)
    struct.pack_into(">I", read, 28, stat_sn + 2)
    read[32:42] = bytes([0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0])
    c.send(read)
    response, data = c.recv()
    assert response[0] & 0x3F == 0x25 and response[1] & 0x01, f"expected Data-In with status: {response[:4].hex()}"
    assert data == block, "read back something else"
    print("header and data digests: login, WRITE with immediate data, READ, every digest checked")


if __name__ == "__main__":
    main()
