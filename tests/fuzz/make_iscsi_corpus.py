#!/usr/bin/python3
"""Write the seed corpus of fuzz_iscsi_session: valid iSCSI initiator conversations.

Each file is two shape bytes (enum shape_bits in fuzz_iscsi_session.c:
chunking, draining, the canned login, how the session ends) followed by the
bytes an initiator sends: Login, SCSI Command, Data-Out, NOP-Out, Text,
Task Management and Logout PDUs as RFC 7143 §11 lays them out.  Target
transfer tags are predicted: luna numbers them per session from 0, one per
SCSI command it accepts and one per SendTargets answer that continues.

Usage: /usr/bin/python3 make_iscsi_corpus.py [OUTPUT_DIR]
(default: tests/fuzz/corpus/iscsi_session of the current directory).
"""
import os
import struct
import sys

CHUNK_WHOLE, CHUNK_8, CHUNK_64, CHUNK_512 = 0, 1, 2, 3
DRAIN_EACH = 0x04
LOGIN = 0x08
DISCOVERY = 0x10
END_DRAIN_THEN_FREE, END_FREE_IN_FLIGHT, END_INPUT_CLOSED, END_SHUTDOWN = 0x00, 0x20, 0x40, 0x60
KEEP_OUTPUT = 0x80

TARGET = "iqn.2026-12.org.example:fuzz"
INITIATOR = "iqn.2026-12.org.example:fuzzer"
RESERVED = 0xFFFFFFFF
F, R, W, SIMPLE = 0x80, 0x40, 0x20, 0x01


def keys(*pairs):
    return b"".join(p.encode() + b"\0" for p in pairs)


def cdb(*fields):
    out = bytes(fields)
    return out + bytes(16 - len(out))


def read10(lba, blocks):
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0) + bytes(6)


def write10(lba, blocks):
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0) + bytes(6)


def inquiry(length, page=None):
    if page is None:
        return struct.pack(">BBBH", 0x12, 0, 0, length) + bytes(11)
    return struct.pack(">BBBH", 0x12, 1, page, length) + bytes(11)


TUR = bytes(16)
REPORT_LUNS = struct.pack(">BBBBBBIBB", 0xA0, 0, 0, 0, 0, 0, 4096, 0, 0) + bytes(4)
READ_CAPACITY10 = cdb(0x25)
READ_CAPACITY16 = struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0)
GET_LBA_STATUS = struct.pack(">BBQIBB", 0x9E, 0x12, 0, 4096, 0, 0)
SYNC_CACHE10 = cdb(0x35)
MODE_SENSE6 = cdb(0x1A, 0x08, 0x3F, 0, 255, 0)
MODE_SENSE10 = struct.pack(">BBBBBBBHB", 0x5A, 0x08, 0x3F, 0, 0, 0, 0, 1024, 0) + bytes(6)
WRITE_SAME16_UNMAP = struct.pack(">BBQIBB", 0x93, 0x08, 16, 16, 0, 0)


def unmap(lba, blocks):
    data = struct.pack(">HH4x", 22, 16) + struct.pack(">QI4x", lba, blocks)
    return struct.pack(">BBBBBBBHB", 0x42, 0, 0, 0, 0, 0, 0, len(data), 0) + bytes(6), data


def crc32c(data, crc=0xFFFFFFFF):
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc


def digest(data):
    """The complemented CRC32C, least significant byte first (RFC 7143 §13.1, B.4)."""
    return struct.pack("<I", ~crc32c(data) & 0xFFFFFFFF)


class Session:
    def __init__(self, cmd_sn=1):
        self.digests = False  # CRC32C header and data digests, once the login negotiated them
        self.out = bytearray()
        self.cmd_sn = cmd_sn
        self.ttt = 0
        self.itt = 0x100
        self.isid = bytes([0x80, 0, 0, 0x42, 0, 1])

    def pdu(self, bhs, data=b"", bad_data_digest=False):
        bhs = bytearray(bhs)
        bhs[5:8] = len(data).to_bytes(3, "big")
        segment = data + bytes((4 - len(data) % 4) % 4)
        self.out += bhs
        if self.digests:
            self.out += digest(bhs)
        self.out += segment
        if self.digests and data:
            self.out += digest(segment) if not bad_data_digest else b"\0\0\0\0"

    def next_itt(self):
        self.itt += 1
        return self.itt

    def login(self, csg, nsg, transit, data, cont=False, tsih=0):
        flags = (0x80 if transit else 0) | (0x40 if cont else 0) | csg << 2 | nsg
        bhs = struct.pack(">BBBB4x6sHIHHII16x", 0x43, flags, 0, 0, self.isid, tsih, 0x10, 0, 0,
                          self.cmd_sn, 0)
        self.pdu(bhs, data)

    def normal_login(self, *operational, digest="None"):
        self.login(0, 1, True, keys("InitiatorName=" + INITIATOR, "TargetName=" + TARGET,
                                    "SessionType=Normal", "AuthMethod=None"))
        self.login(1, 3, True, keys("HeaderDigest=" + digest, "DataDigest=" + digest, *operational))
        self.digests = digest.startswith("CRC32C")

    def command(self, lun, flags, edtl, cdb_bytes, immediate=b"", immediate_flag=False, cmd_sn=None):
        itt = self.next_itt()
        op = 0x01 | (0x40 if immediate_flag else 0)
        sn = self.cmd_sn if cmd_sn is None else cmd_sn
        if cmd_sn is None and not immediate_flag:
            self.cmd_sn += 1
        bhs = struct.pack(">BBxx4x8sIIII", op, flags, struct.pack(">xB6x", lun), itt, edtl, sn, 0) + cdb_bytes
        self.pdu(bhs, immediate)
        ttt = self.ttt
        self.ttt += 1
        return itt, ttt

    def data_out(self, itt, ttt, lun, data_sn, offset, data, final=True):
        bhs = struct.pack(">BBxx4x8sIIIIIIII", 0x05, 0x80 if final else 0, struct.pack(">xB6x", lun), itt, ttt,
                          0, 0, 0, data_sn, offset, 0)
        self.pdu(bhs, data)

    def write(self, lun, lba, data, immediate, burst, piece):
        """WRITE(10): immediate bytes, then answer the R2Ts the target sends (one at a time)."""
        itt, ttt = self.command(lun, F | W | SIMPLE, len(data), write10(lba, len(data) // 512),
                                data[:immediate])
        offset = immediate
        while offset < len(data):
            end = min(offset + burst, len(data))
            sn = 0
            while offset < end:
                n = min(piece, end - offset)
                self.data_out(itt, ttt, lun, sn, offset, data[offset:offset + n], offset + n == end)
                offset += n
                sn += 1
        return itt

    def nop(self, data=b"", itt=None, immediate=True):
        itt = self.next_itt() if itt is None else itt
        sn = self.cmd_sn
        if not immediate:
            self.cmd_sn += 1
        bhs = struct.pack(">BB2x4x8xIIII16x", 0x00 | (0x40 if immediate else 0), 0x80, itt, RESERVED, sn, 0)
        self.pdu(bhs, data)

    def text(self, data, ttt=RESERVED, itt=None, flags=0x80):
        itt = self.next_itt() if itt is None else itt
        bhs = struct.pack(">BB2x4x8xIIII16x", 0x04, flags, itt, ttt, self.cmd_sn, 0)
        self.cmd_sn += 1
        self.pdu(bhs, data)
        return itt

    def tmf(self, function, lun=0, ref_itt=RESERVED, ref_cmd_sn=0):
        bhs = struct.pack(">BBxx4x8sIIIII12x", 0x42, 0x80 | function, struct.pack(">xB6x", lun),
                          self.next_itt(), ref_itt, self.cmd_sn, 0, ref_cmd_sn)
        self.pdu(bhs)

    def logout(self, reason=0):
        bhs = struct.pack(">BB2x4x8xI4xII16x", 0x06, 0x80 | reason, self.next_itt(), self.cmd_sn, 0)
        self.cmd_sn += 1
        self.pdu(bhs)

    def raw(self, bhs, data=b""):
        self.pdu(bhs, data)


def pattern(n, seed=3):
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def clear_attention(s, lun):
    s.command(lun, F | SIMPLE, 0, TUR)
    s.command(lun, F | SIMPLE, 0, TUR)


def seeds():
    out = {}

    s = Session()
    s.normal_login("MaxRecvDataSegmentLength=4096", "MaxBurstLength=16384", "FirstBurstLength=8192",
                   "ImmediateData=Yes", "MaxOutstandingR2T=1", "InitialR2T=Yes")
    s.command(0, F | R | SIMPLE, 96, inquiry(96))
    clear_attention(s, 0)
    clear_attention(s, 1)
    s.command(0, F | R | SIMPLE, 8, READ_CAPACITY10)
    s.command(1, F | R | SIMPLE, 32768, read10(0, 64))
    s.write(0, 8, pattern(24576), 8192, 16384, 4096)
    s.command(0, F | R | SIMPLE, 24576, read10(8, 48))
    s.logout()
    out["login_io_logout"] = (CHUNK_64 | DRAIN_EACH, s.out)

    s = Session()
    s.login(0, 1, True, keys("InitiatorName=" + INITIATOR, "SessionType=Discovery", "AuthMethod=None"))
    s.login(1, 3, True, keys("MaxRecvDataSegmentLength=512", "InitialR2T=No", "X-org.example.Key=1"))
    itt = s.text(keys("SendTargets=All"))
    s.text(b"", ttt=0, itt=itt)
    s.logout()
    out["discovery_send_targets"] = (CHUNK_WHOLE | DRAIN_EACH, s.out)

    s = Session()
    s.command(0, F | R | SIMPLE, 4096, REPORT_LUNS)
    clear_attention(s, 0)
    s.write(0, 0, pattern(4096, 9), 4096, 16384, 4096)
    s.command(0, F | R | SIMPLE, 4096, read10(0, 8))
    s.command(0, F | SIMPLE, 0, SYNC_CACHE10)
    c, data = unmap(0, 8)
    s.command(0, F | W | SIMPLE, len(data), c, data)
    s.command(0, F | SIMPLE, 0, WRITE_SAME16_UNMAP)
    s.command(0, F | R | SIMPLE, 4096, GET_LBA_STATUS)
    s.command(0, F | R | SIMPLE, 255, MODE_SENSE6)
    s.command(0, F | R | SIMPLE, 1024, MODE_SENSE10)
    s.command(0, F | R | SIMPLE, 32, READ_CAPACITY16)
    for page in (0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2):
        s.command(0, F | R | SIMPLE, 255, inquiry(255, page))
    s.command(5, F | R | SIMPLE, 36, inquiry(36))
    s.command(5, F | SIMPLE, 0, TUR)
    s.command(7, F | R | SIMPLE, 4096, REPORT_LUNS)
    s.command(1, F | R | SIMPLE, 1024, read10(2, 8))      # overflow
    s.command(1, F | R | SIMPLE, 8192, read10(2, 8))      # underflow
    s.command(1, F | W | SIMPLE, 512, write10(0, 1), bytes(512))  # read-only LUN
    s.command(0, F | R | SIMPLE, 512, read10(0x7FFFFFFF, 1))  # out of range
    s.logout()
    out["canned_login_scsi"] = (LOGIN | CHUNK_512, s.out)

    s = Session()
    s.login(0, 0, False, keys("InitiatorName=" + INITIATOR, "SessionType=Discovery", "AuthMethod=CHAP,None"))
    s.login(0, 1, True, b"")
    s.login(1, 1, False, keys("MaxRecvDataSegmentLength=512"))
    s.login(1, 3, True, keys("DataDigest=None"))
    itt = s.text(keys("SendTargets=All"))
    s.text(b"", ttt=0, itt=itt)
    s.logout()
    out["discovery_login_four_pdus"] = (CHUNK_8 | DRAIN_EACH, s.out)

    s = Session()
    itt = s.text(keys("SendTargets=All"))
    s.text(b"", ttt=0, itt=itt)
    s.text(keys("SendTargets=" + TARGET, "Unknown=1"))
    s.text(keys("SendTargets="))
    s.logout()
    out["canned_discovery_text"] = (LOGIN | DISCOVERY | CHUNK_8, s.out)

    s = Session()
    data = keys("InitiatorName=" + INITIATOR, "TargetName=" + TARGET, "SessionType=Normal", "AuthMethod=None")
    s.login(0, 1, False, data[:40], cont=True)
    s.login(0, 1, True, data[40:])
    s.login(1, 1, False, keys("MaxRecvDataSegmentLength=1024", "MaxBurstLength=4096"))
    s.login(1, 3, True, b"")
    s.nop(b"ping data, thirteen")
    s.nop(b"", immediate=False)
    s.nop(b"", itt=RESERVED)
    s.text(keys("SendTargets="))
    s.logout(2)
    s.logout(0)
    out["continued_login_nop"] = (CHUNK_8 | DRAIN_EACH | END_INPUT_CLOSED, s.out)

    s = Session()
    clear_attention(s, 0)
    clear_attention(s, 1)
    sn = s.cmd_sn
    itt, ttt = s.command(0, F | W | SIMPLE, 8192, write10(0, 16))
    s.tmf(1, 0, itt, sn)
    s.data_out(itt, ttt, 0, 0, 0, pattern(8192))
    s.command(0, F | W | SIMPLE, 4096, write10(0, 8))
    s.tmf(5, 0)
    s.tmf(2, 0)
    s.tmf(4, 1)
    s.tmf(6)
    s.tmf(3)
    s.tmf(8)
    s.tmf(1, 0, 0x9999, 0)
    sn = s.cmd_sn
    itt, _ = s.command(1, F | R | SIMPLE, 65536, read10(0, 128))
    s.tmf(1, 1, itt, sn)
    s.tmf(5, 9)
    s.tmf(7)
    out["task_management"] = (LOGIN | CHUNK_WHOLE, s.out)

    s = Session()
    s.raw(bytes([0x5C, 0x80]) + bytes(46), b"vendor")
    s.raw(bytes([0x10, 0x80]) + bytes(14) + b"\xff" * 4 + bytes(28))
    s.raw(bytes([0x43, 0x87]) + bytes(46))
    s.command(0, F | R | W | SIMPLE, 512, read10(0, 1))
    s.command(0, F | R | SIMPLE, 64 << 20, read10(0, 1))
    itt, ttt = s.command(1, F | R | SIMPLE, 512, read10(0, 1))
    s.data_out(itt, ttt, 1, 0, 0, bytes(512))
    s.text(keys("SendTargets="), flags=0x40)
    s.text(b"", ttt=1234)
    s.command(0, F | SIMPLE, 0, TUR, cmd_sn=s.cmd_sn + 5)
    s.command(0, F | SIMPLE, 0, TUR, immediate_flag=True)
    ahs = bytearray(struct.pack(">BBxx4x8sIIII", 0x01, F | SIMPLE, bytes(8), 0x777, 0, s.cmd_sn, 0) + TUR)
    ahs[4] = 1
    s.cmd_sn += 1
    s.out += ahs + bytes(4)
    s.logout()
    out["rejects_and_windows"] = (LOGIN | CHUNK_64, s.out)

    s = Session()
    s.login(0, 1, True, keys("InitiatorName=" + INITIATOR, "TargetName=iqn.2026-12.org.example:nope"))
    out["login_refused_unknown_target"] = (CHUNK_8, s.out)

    s = Session()
    s.login(1, 3, True, keys("InitiatorName=" + INITIATOR, "TargetName=" + TARGET, "MaxBurstLength=100"))
    out["login_refused_value"] = (CHUNK_WHOLE, s.out)

    s = Session()
    clear_attention(s, 1)
    s.command(1, F | R | SIMPLE, 262144, read10(0, 512))
    s.command(1, F | R | SIMPLE, 4096, read10(504, 8))
    s.logout()
    out["big_read"] = (LOGIN | CHUNK_512 | KEEP_OUTPUT, s.out)

    s = Session()
    clear_attention(s, 0)
    for i in range(4):
        s.write(0, i * 32, pattern(16384, i), 8192, 16384, 8192)
    s.command(0, F | R | SIMPLE, 65536, read10(0, 128))
    s.nop(b"after")
    out["shutdown_mid_writes"] = (LOGIN | CHUNK_64 | END_SHUTDOWN, s.out)

    s = Session()
    clear_attention(s, 1)
    s.command(1, F | R | SIMPLE, 131072, read10(0, 256))
    s.command(1, F | R | SIMPLE, 131072, read10(256, 256))
    out["free_in_flight"] = (LOGIN | CHUNK_WHOLE | END_FREE_IN_FLIGHT, s.out)

    s = Session()
    s.normal_login("MaxRecvDataSegmentLength=8192", "MaxBurstLength=16384", "FirstBurstLength=4096",
                   "ImmediateData=Yes", digest="CRC32C,None")
    s.command(0, F | R | SIMPLE, 96, inquiry(96))
    clear_attention(s, 0)
    s.write(0, 0, pattern(12288, 1), 4096, 16384, 4096)
    s.command(0, F | R | SIMPLE, 12288, read10(0, 24))
    s.nop(b"digest ping")
    itt = s.next_itt()
    s.pdu(struct.pack(">BB2x4x8xIIII16x", 0x40, 0x80, itt, RESERVED, s.cmd_sn, 0), b"bad digest",
          bad_data_digest=True)
    out["digests"] = (CHUNK_64 | DRAIN_EACH, s.out)

    s = Session()
    s.normal_login("MaxRecvDataSegmentLength=512", "MaxBurstLength=512", "FirstBurstLength=512",
                   "ImmediateData=No", "MaxOutstandingR2T=4")
    clear_attention(s, 0)
    s.write(0, 0, pattern(2048, 5), 0, 512, 512)
    s.command(0, F | R | SIMPLE, 2048, read10(0, 4))
    s.logout()
    out["small_bursts"] = (CHUNK_8, s.out)
    return out


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/iscsi_session"
    os.makedirs(directory, exist_ok=True)
    for name, (shape, data) in sorted(seeds().items()):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(bytes([shape, 0x5A]) + bytes(data))


if __name__ == "__main__":
    main()
