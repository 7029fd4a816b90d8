"""iscsi_pdu: the pieces of a minimal iSCSI initiator on a raw socket (RFC 7143), shared by
iscsi_digest_client.py and iscsi_misbehave.py: CRC32C digests, PDU framing (BHS, AHS, data
segment, padding, digests), building the initiator's PDUs, a login straight from the
operational stage to the full feature phase, and SCSI commands with immediate data, R2T /
Data-Out and Data-In.  Everything is written out here, independently of lunad's own code.
"""
import socket
import struct

BHS = 48
RESERVED_TAG = 0xFFFFFFFF

# Opcodes (byte 0, low six bits).
NOP_OUT, SCSI_COMMAND, TASK_MANAGEMENT, LOGIN, TEXT, DATA_OUT, LOGOUT, SNACK = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10
NOP_IN, SCSI_RESPONSE, TMF_RESPONSE, LOGIN_RESPONSE, TEXT_RESPONSE, DATA_IN, LOGOUT_RESPONSE = 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26
R2T, ASYNC_MESSAGE, REJECT = 0x31, 0x32, 0x3F
IMMEDIATE = 0x40  # byte 0
FINAL = 0x80      # byte 1

# Reject reasons (§11.17.1).
REJECT_DATA_DIGEST = 0x02
REJECT_PROTOCOL_ERROR = 0x04
REJECT_COMMAND_NOT_SUPPORTED = 0x05
REJECT_INVALID_PDU_FIELD = 0x09

BLOCK = 512


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
    """The CRC32C digest of data as sent on the wire (least significant byte first)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return struct.pack("<I", crc ^ 0xFFFFFFFF)


def pad(data):
    return data + b"\0" * (-len(data) % 4)


def keys(**pairs):
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs.items())


def parse_keys(data):
    return dict(kv.split("=", 1) for kv in data.decode(errors="replace").split("\0") if "=" in kv)


def opcode(bhs):
    return bhs[0] & 0x3F


def itt_of(bhs):
    return struct.unpack_from(">I", bhs, 16)[0]


def describe(bhs):
    return f"opcode {opcode(bhs):#04x} flags {bhs[1]:#04x} byte2 {bhs[2]:#04x} byte3 {bhs[3]:#04x} ITT {itt_of(bhs):#x}"


def login_pdu(isid, flags, itt=1, cmd_sn=1, tsih=0):
    """A Login Request BHS; flags: T (0x80), C (0x40), CSG << 2, NSG."""
    bhs = bytearray(BHS)
    bhs[0] = IMMEDIATE | LOGIN
    bhs[1] = flags
    bhs[8:14] = isid
    struct.pack_into(">H", bhs, 14, tsih)
    struct.pack_into(">II", bhs, 16, itt, 0)      # ITT, CID
    struct.pack_into(">II", bhs, 24, cmd_sn, 0)   # CmdSN, ExpStatSN
    return bhs


class Closed(Exception):
    """The target closed the connection (EOF or reset)."""


class Connection:
    """One TCP connection.  Tracks CmdSN from each response's ExpCmdSN and answers the target's
    NOP-In pings by itself (recv), so a long-lived session survives iscsi_ping_interval."""

    def __init__(self, host, port, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.header_digest = self.data_digest = False
        self.cmd_sn = 1
        self.exp_stat_sn = 0
        self.next_itt = 0x10
        self.max_recv = 8192
        self.pings = 0

    def close(self):
        self.sock.close()

    def itt(self):
        self.next_itt += 1
        return self.next_itt

    def take_cmd_sn(self, immediate=False):
        """The CmdSN for the next command (non-immediate ones advance it)."""
        cmd_sn = self.cmd_sn
        if not immediate:
            self.cmd_sn = (self.cmd_sn + 1) & 0xFFFFFFFF
        return cmd_sn

    def wire(self, bhs, data=b"", ahs=b"", bad_header_digest=False, bad_data_digest=False):
        """The bytes of a PDU: bhs with TotalAHSLength and DataSegmentLength filled in."""
        bhs = bytearray(bhs)
        bhs[4] = len(ahs) // 4
        bhs[5:8] = len(data).to_bytes(3, "big")
        header = bytes(bhs) + ahs
        out = header
        if self.header_digest:
            d = digest(header)
            out += bytes(b ^ 0xFF for b in d) if bad_header_digest else d
        if data:
            out += pad(data)
            if self.data_digest:
                d = digest(pad(data))
                out += bytes(b ^ 0xFF for b in d) if bad_data_digest else d
        return out

    def send(self, bhs, data=b"", **kwargs):
        self.sock.sendall(self.wire(bhs, data, **kwargs))

    def recv_exact(self, n):
        out = b""
        while len(out) < n:
            try:
                chunk = self.sock.recv(n - len(out))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed(f"connection closed after {len(out)} of {n} bytes")
            out += chunk
        return out

    def recv_pdu(self):
        """The next PDU as (bhs, data), its digests checked; sequence numbers tracked."""
        bhs = self.recv_exact(BHS)
        ahs = self.recv_exact(bhs[4] * 4) if bhs[4] else b""
        if self.header_digest and self.recv_exact(4) != digest(bhs + ahs):
            raise AssertionError("bad header digest from the target")
        length = int.from_bytes(bhs[5:8], "big")
        data = b""
        if length:
            padded = self.recv_exact(length + (-length % 4))
            if self.data_digest and self.recv_exact(4) != digest(padded):
                raise AssertionError("bad data digest from the target")
            data = padded[:length]
        stat_sn, exp_cmd_sn = struct.unpack_from(">II", bhs, 24)
        op = opcode(bhs)
        if (exp_cmd_sn - self.cmd_sn) & 0x80000000 == 0:  # serial arithmetic: only forwards
            self.cmd_sn = exp_cmd_sn
        status_pdu = op in (SCSI_RESPONSE, TMF_RESPONSE, LOGIN_RESPONSE, TEXT_RESPONSE, LOGOUT_RESPONSE, REJECT) or \
            (op == DATA_IN and bhs[1] & 0x01) or (op == NOP_IN and itt_of(bhs) != RESERVED_TAG)
        if status_pdu:
            self.exp_stat_sn = (stat_sn + 1) & 0xFFFFFFFF
        return bhs, data

    def recv(self):
        """The next PDU that is not a ping of the target's (those are answered here)."""
        while True:
            bhs, data = self.recv_pdu()
            if opcode(bhs) == NOP_IN and itt_of(bhs) == RESERVED_TAG:
                ttt = struct.unpack_from(">I", bhs, 20)[0]
                if ttt != RESERVED_TAG:
                    self.answer_ping(bhs)
                continue
            return bhs, data

    def answer_ping(self, ping):
        answer = bytearray(BHS)
        answer[0] = IMMEDIATE | NOP_OUT
        answer[1] = FINAL
        answer[8:16] = ping[8:16]
        struct.pack_into(">IIII", answer, 16, RESERVED_TAG, struct.unpack_from(">I", ping, 20)[0],
                         self.cmd_sn, self.exp_stat_sn)
        self.send(answer)
        self.pings += 1

    # ---- PDUs ----

    def header(self, op, flags=FINAL, immediate=False, itt=None, cmd_sn=None, lun=0):
        """A BHS with the fields every request has: opcode, flags, LUN, ITT, CmdSN, ExpStatSN."""
        bhs = bytearray(BHS)
        bhs[0] = op | (IMMEDIATE if immediate else 0)
        bhs[1] = flags
        struct.pack_into(">Q", bhs, 8, lun << 48)
        if cmd_sn is None:
            cmd_sn = self.take_cmd_sn(immediate)
        struct.pack_into(">I", bhs, 16, self.itt() if itt is None else itt)
        struct.pack_into(">II", bhs, 24, cmd_sn, self.exp_stat_sn)
        return bhs

    def nop_out(self, itt=None, immediate=True, cmd_sn=None):
        bhs = self.header(NOP_OUT, immediate=immediate, itt=itt, cmd_sn=cmd_sn)
        struct.pack_into(">I", bhs, 20, RESERVED_TAG)
        return bhs

    def command(self, cdb, read=0, write=0, immediate=False, itt=None, cmd_sn=None, lun=0):
        """A SCSI Command PDU: read / write are the expected transfer length in that direction."""
        flags = FINAL | (0x40 if read else 0) | (0x20 if write else 0) | 0x01  # SIMPLE task attribute
        bhs = self.header(SCSI_COMMAND, flags=flags, immediate=immediate, itt=itt, cmd_sn=cmd_sn, lun=lun)
        struct.pack_into(">I", bhs, 20, read or write)
        bhs[32:32 + len(cdb)] = cdb
        return bhs

    def data_out(self, itt, ttt, offset, data_sn=0, final=True, lun=0):
        bhs = bytearray(BHS)
        bhs[0] = DATA_OUT
        bhs[1] = FINAL if final else 0
        struct.pack_into(">Q", bhs, 8, lun << 48)
        struct.pack_into(">II", bhs, 16, itt, ttt)
        struct.pack_into(">I", bhs, 28, self.exp_stat_sn)
        struct.pack_into(">II", bhs, 36, data_sn, offset)
        return bhs

    def text(self, ttt=RESERVED_TAG, flags=FINAL, immediate=False):
        bhs = self.header(TEXT, flags=flags, immediate=immediate)
        struct.pack_into(">I", bhs, 20, ttt)
        return bhs

    # ---- exchanges ----

    def login(self, target=None, initiator="iqn.2026-12.org.luna.test:raw", discovery=False, digests=False,
              isid=b"\x80\x00\x12\x34\x00\x01", max_recv=262144):
        """Operational stage straight to full feature (AuthMethod None needs no security stage)."""
        pairs = {"InitiatorName": initiator, "SessionType": "Discovery" if discovery else "Normal"}
        if not discovery:
            pairs["TargetName"] = target
        if digests:
            pairs.update(HeaderDigest="CRC32C,None", DataDigest="CRC32C,None")
        pairs["MaxRecvDataSegmentLength"] = max_recv
        self.send(login_pdu(isid, FINAL | (1 << 2) | 3), keys(**pairs))
        bhs, data = self.recv_pdu()
        answer = parse_keys(data)
        assert opcode(bhs) == LOGIN_RESPONSE and bhs[36] == 0 and bhs[1] & FINAL and bhs[1] & 3 == 3, \
            f"login failed: {describe(bhs)} status {bhs[36]:#x}/{bhs[37]:#x} {answer}"
        self.max_recv = max_recv
        self.exp_stat_sn = (struct.unpack_from(">I", bhs, 24)[0] + 1) & 0xFFFFFFFF
        self.cmd_sn = struct.unpack_from(">I", bhs, 28)[0]
        if digests:
            assert answer.get("HeaderDigest") == "CRC32C" and answer.get("DataDigest") == "CRC32C", answer
            self.header_digest = self.data_digest = True
        return answer

    def ping(self, data=b""):
        """An immediate NOP-Out with a task tag: the NOP-In must echo its tag and data."""
        itt = self.itt()
        self.send(self.nop_out(itt=itt), data)
        bhs, echoed = self.recv()
        assert opcode(bhs) == NOP_IN and itt_of(bhs) == itt and echoed == data[:self.max_recv], \
            f"expected a NOP-In for ITT {itt:#x}: {describe(bhs)}"

    def scsi(self, cdb, read=0, data=None, immediate_data=True, itt=None):
        """Run a SCSI command to its end: (status, sense, data in, response BHS)."""
        itt = itt or self.itt()
        write = len(data) if data else 0
        first = data[:min(write, 65536)] if immediate_data and data else b""
        self.send(self.command(cdb, read=read, write=write, itt=itt), first)
        got = bytearray()
        while True:
            bhs, segment = self.recv()
            op = opcode(bhs)
            assert itt_of(bhs) == itt, f"answer for ITT {itt_of(bhs):#x}, expected {itt:#x}: {describe(bhs)}"
            if op == R2T:
                ttt = struct.unpack_from(">I", bhs, 20)[0]
                offset, length = struct.unpack_from(">II", bhs, 40)  # Buffer Offset, Desired Data Transfer Length
                sent, data_sn = 0, 0
                while sent < length:
                    n = min(length - sent, 8192)
                    self.send(self.data_out(itt, ttt, offset + sent, data_sn=data_sn, final=sent + n == length),
                              data[offset + sent:offset + sent + n])
                    sent += n
                    data_sn += 1
            elif op == DATA_IN:
                offset = struct.unpack_from(">I", bhs, 40)[0]
                assert offset == len(got), f"Data-In at offset {offset}, expected {len(got)}"
                got += segment
                if bhs[1] & 0x01:
                    return bhs[3], b"", bytes(got), bhs
            elif op == SCSI_RESPONSE:
                sense = segment[2:2 + struct.unpack(">H", segment[:2])[0]] if len(segment) >= 2 else b""
                return bhs[3], sense, bytes(got), bhs
            else:
                raise AssertionError(f"unexpected PDU during a command: {describe(bhs)}")

    def take_unit_attention(self):
        """The first command of an I_T nexus (initiator name and ISID) on a LUN gets the power-on
        unit attention (sense key 6, ASC 29): take it with a TEST UNIT READY.  The LUN keeps it
        per nexus, across sessions: a later session of the same nexus gets GOOD.  True if taken."""
        status, sense, _, _ = self.scsi(bytes(6))
        if status == 0:
            return False
        assert status == 0x02 and sense[2] & 0x0F == 6 and sense[12] == 0x29, \
            f"expected a power-on unit attention or GOOD: status {status:#x} sense {sense.hex()}"
        return True

    def write(self, lba, data, immediate_data=True):
        blocks = len(data) // BLOCK
        cdb = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)  # WRITE(10)
        status, sense, _, _ = self.scsi(cdb, data=data, immediate_data=immediate_data)
        assert status == 0, f"WRITE(10) at LBA {lba} failed: status {status:#x} sense {sense.hex()}"

    def read(self, lba, blocks):
        cdb = struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)  # READ(10)
        status, sense, data, _ = self.scsi(cdb, read=blocks * BLOCK)
        assert status == 0, f"READ(10) at LBA {lba} failed: status {status:#x} sense {sense.hex()}"
        return data

    def expect_closed(self, timeout=5.0):
        """True when the target closes the connection within timeout, False when it keeps it;
        a PDU it sends instead fails the check."""
        self.sock.settimeout(timeout)
        try:
            bhs, _ = self.recv_pdu()
        except Closed:
            return True
        except socket.timeout:
            return False
        raise AssertionError(f"expected the connection to close, got a PDU: {describe(bhs)}")
