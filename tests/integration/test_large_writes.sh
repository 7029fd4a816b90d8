#!/usr/bin/env bash
# WRITE payloads against lunad's socket reading (large_writes.py, raw sockets):
# payloads trickling in slowly, the largest payload accepted, and odd-sized
# writes sent back to back with each header right behind the previous
# payload, over TCP (where SO_RCVLOWAT applies).
source "$(dirname "$0")/lib.sh"

helper=$(dirname "$0")/large_writes.py
truncate -s 64M "$WORK/disk.img"
port=$(free_port)
luna_start --nbd "127.0.0.1:$port" --export "disk=$WORK/disk.img,cache=writeback,aio=io_uring"

timeout 120 "$SYSTEM_PYTHON" "$helper" 127.0.0.1 "$port" disk || fail "large writes over TCP"
luna_alive
luna_stop
pass "large, trickled and back-to-back write payloads"
