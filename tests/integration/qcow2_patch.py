#!/usr/bin/python3
"""qcow2_patch: inject inconsistencies into a qcow2 image (for check tests).

  qcow2_patch.py IMAGE refadd CLUSTER DELTA   add DELTA to CLUSTER's stored refcount
  qcow2_patch.py IMAGE refset CLUSTER VALUE   set CLUSTER's stored refcount
  qcow2_patch.py IMAGE l2 GUEST_CLUSTER xor|add VALUE
                                              change the active L2 entry of a guest cluster
  qcow2_patch.py IMAGE host GUEST_CLUSTER     print the host cluster a guest cluster maps to
  qcow2_patch.py IMAGE incompat-or BITS       set incompatible feature bits (v3)
  qcow2_patch.py IMAGE grow-leak              append a cluster counted as used (a leak)
  qcow2_patch.py IMAGE reftable               print the first cluster of the refcount table
"""
import struct
import sys

OFFSET_MASK = 0x00fffffffffffe00

img, op = sys.argv[1], sys.argv[2]
f = open(img, "r+b")
h = f.read(112)
version = struct.unpack(">I", h[4:8])[0]
cs = 1 << struct.unpack(">I", h[20:24])[0]
l1off = struct.unpack(">Q", h[40:48])[0]
rtoff = struct.unpack(">Q", h[48:56])[0]
rbits = 1 << (struct.unpack(">I", h[96:100])[0] if version >= 3 else 4)
incompat = struct.unpack(">Q", h[72:80])[0] if version >= 3 else 0
esize = 16 if incompat & 16 else 8


def refslot(c):
    per = cs * 8 // rbits
    f.seek(rtoff + (c // per) * 8)
    return struct.unpack(">Q", f.read(8))[0], c % per


def getref(c):
    blk, i = refslot(c)
    bit = i * rbits
    f.seek(blk + bit // 8)
    raw = f.read(max(1, rbits // 8))
    if rbits < 8:
        return (raw[0] >> (bit % 8)) & ((1 << rbits) - 1)
    return int.from_bytes(raw, "big")


def setref(c, v):
    blk, i = refslot(c)
    bit = i * rbits
    f.seek(blk + bit // 8)
    if rbits < 8:
        b = f.read(1)[0]
        m = ((1 << rbits) - 1) << (bit % 8)
        f.seek(blk + bit // 8)
        f.write(bytes([(b & ~m) | ((v << (bit % 8)) & m)]))
    else:
        f.write(v.to_bytes(rbits // 8, "big"))


def l2_position(g):
    per = cs // esize
    f.seek(l1off + (g // per) * 8)
    l2 = struct.unpack(">Q", f.read(8))[0] & OFFSET_MASK
    if not l2:
        sys.exit("guest cluster %d has no L2 table" % g)
    return l2 + (g % per) * esize


if op == "refadd":
    c = int(sys.argv[3], 0)
    setref(c, getref(c) + int(sys.argv[4]))
elif op == "refset":
    setref(int(sys.argv[3], 0), int(sys.argv[4]))
elif op == "l2":
    pos = l2_position(int(sys.argv[3], 0))
    f.seek(pos)
    e = struct.unpack(">Q", f.read(8))[0]
    v = int(sys.argv[5], 0)
    e = e ^ v if sys.argv[4] == "xor" else e + v
    f.seek(pos)
    f.write(struct.pack(">Q", e))
elif op == "host":
    f.seek(l2_position(int(sys.argv[3], 0)))
    print((struct.unpack(">Q", f.read(8))[0] & OFFSET_MASK) // cs)
elif op == "grow-leak":
    f.seek(0, 2)
    end = (f.tell() + cs - 1) // cs
    f.truncate((end + 1) * cs)
    setref(end, 1)
elif op == "reftable":
    print(rtoff // cs)
elif op == "incompat-or":
    f.seek(72)
    f.write(struct.pack(">Q", incompat | int(sys.argv[3], 0)))
else:
    sys.exit("unknown operation " + op)
