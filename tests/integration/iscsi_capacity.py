"""iscsi_capacity: an initiator logged in while its LUN grows (issue 5).

  iscsi_capacity.py HOST PORT IQN CONTROL
Logs in, reads the capacity, prints "ready" and waits for a line on stdin (the test grows the
file and reloads lunad meanwhile), then expects CAPACITY DATA HAS CHANGED (2A 09) once, the
new capacity from READ CAPACITY(16), and a write and read back past the old end.
"""
import struct
import sys

from iscsi_pdu import BLOCK, Connection


def capacity(connection):
    status, sense, data, _ = connection.scsi(struct.pack(">BB8xIxx", 0x9E, 0x10, 32), read=32)
    assert status == 0, f"READ CAPACITY(16): status {status:#x} sense {sense.hex()}"
    return struct.unpack_from(">Q", data, 0)[0] + 1


def main():
    host, port, iqn = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    connection = Connection(host, port, timeout=30)
    connection.login(iqn, initiator="iqn.2026-12.org.luna.test:grow")
    connection.take_unit_attention()
    before = capacity(connection)
    print(f"ready {before}", flush=True)
    sys.stdin.readline()
    status, sense, _, _ = connection.scsi(bytes(6))
    assert status == 0x02 and sense[2] & 0x0F == 6 and (sense[12], sense[13]) == (0x2A, 0x09), \
        f"expected CAPACITY DATA HAS CHANGED: status {status:#x} sense {sense.hex()}"
    status, _, _, _ = connection.scsi(bytes(6))
    assert status == 0, "the unit attention came once"
    after = capacity(connection)
    assert after > before, f"capacity {after} blocks after growing, {before} before"
    lba = after - 1
    data = bytes([0xC3]) * BLOCK
    status, sense, _, _ = connection.scsi(struct.pack(">BBQIxx", 0x8A, 0, lba, 1), data=data)
    assert status == 0, f"WRITE(16) at the new last LBA {lba}: status {status:#x} sense {sense.hex()}"
    status, sense, got, _ = connection.scsi(struct.pack(">BBQIxx", 0x88, 0, lba, 1), read=BLOCK)
    assert status == 0 and got == data, "the new last block reads back"
    print(f"ok {before} {after}", flush=True)


if __name__ == "__main__":
    main()
