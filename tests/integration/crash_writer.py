#!/usr/bin/python3
"""crash_writer: writes and flushes until the server dies, then checks the image.

  crash_writer.py write URI LOG SEED [BLOCK_BYTES] [DEPTH] [FLUSH_EVERY]
      Writes BLOCK_BYTES blocks (default 4096) to slots in a random order fixed
      by SEED, each slot at most once, DEPTH (default 16) in flight, and a
      FLUSH after every FLUSH_EVERY (default 64) acknowledged writes.  A write
      is durable once a FLUSH sent after its acknowledgement completes.  Runs
      until the connection ends; prints "flowing" after the first completed
      flush; writes "SLOT STATE" lines to LOG (STATE: durable or acked).
  crash_writer.py verify LOG RAW_FILE SEED [BLOCK_BYTES]
      Every durable slot holds its pattern; in every other slot each 512-byte
      sector holds its pattern or zeroes (a write in flight or not yet flushed
      may be lost or torn, never mixed with anything else).
"""
import random
import struct
import sys
import time

def pattern(slot, seed, length):
    return struct.pack(">QQ", slot, seed) * (length // 16)


def write(uri, log_path, seed, block, depth, flush_every):
    import nbd
    h = nbd.NBD()
    h.connect_uri(uri)
    slots = list(range(h.get_size() // block))
    random.Random(seed).shuffle(slots)
    next_slot = 0
    in_flight = {}      # cookie -> slot (writes)
    flushes = {}        # cookie -> slots acknowledged before that flush was sent
    acked_since_flush = []
    acked, durable = set(), set()
    announced = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            while len(in_flight) < depth and next_slot < len(slots):
                slot = slots[next_slot]
                next_slot += 1
                buffer = nbd.Buffer.from_bytearray(bytearray(pattern(slot, seed, block)))
                in_flight[h.aio_pwrite(buffer, slot * block)] = (slot, buffer)
            if len(acked_since_flush) >= flush_every:
                flushes[h.aio_flush()] = acked_since_flush
                acked_since_flush = []
            if next_slot >= len(slots) and not in_flight and not flushes:
                print("crash_writer: ran out of slots before the server died", file=sys.stderr)
                break
            h.poll(1000)
            for cookie in list(in_flight):
                if h.aio_command_completed(cookie):
                    slot, _ = in_flight.pop(cookie)
                    acked.add(slot)
                    acked_since_flush.append(slot)
            for cookie in list(flushes):
                if h.aio_command_completed(cookie):
                    durable.update(flushes.pop(cookie))
                    if not announced:
                        print("flowing", flush=True)
                        announced = True
    except nbd.Error as e:
        print(f"crash_writer: connection ended ({e.string}); {len(acked)} acknowledged, "
              f"{len(durable)} durable", flush=True)
    with open(log_path, "w") as log:
        for slot in sorted(acked):
            log.write(f"{slot} {'durable' if slot in durable else 'acked'}\n")
    return 0 if durable else 1


def verify(log_path, raw_path, seed, block):
    states = {}
    with open(log_path) as log:
        for line in log:
            slot, state = line.split()
            states[int(slot)] = state
    zero = bytes(block)
    bad = 0
    durable = 0
    with open(raw_path, "rb") as raw:
        slot = 0
        while True:
            data = raw.read(block)
            if len(data) < block:
                break
            expected = pattern(slot, seed, block)
            state = states.get(slot)
            if state == "durable":
                durable += 1
                ok = data == expected
            else:
                # A write not covered by a flush may be lost or torn (a multi-cluster
                # write lands cluster by cluster), but each sector holds either its
                # new bytes or zeroes, never another block's data.
                ok = all(data[i:i + 512] in (expected[i:i + 512], zero[:512])
                         for i in range(0, block, 512))
            if not ok:
                bad += 1
                if bad <= 5:
                    print(f"crash_writer: slot {slot} ({state or 'not acknowledged'}): wrong content",
                          file=sys.stderr)
            slot += 1
    print(f"crash_writer: {durable} durable writes checked, {bad} bad slots")
    return 1 if bad or not durable else 0


if __name__ == "__main__":
    if sys.argv[1] == "write":
        args = sys.argv[2:]
        sys.exit(write(args[0], args[1], int(args[2]), int(args[3]) if len(args) > 3 else 4096,
                       int(args[4]) if len(args) > 4 else 16, int(args[5]) if len(args) > 5 else 64))
    if sys.argv[1] == "verify":
        args = sys.argv[2:]
        sys.exit(verify(args[0], args[1], int(args[2]), int(args[3]) if len(args) > 3 else 4096))
    sys.exit(__doc__)
