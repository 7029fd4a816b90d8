#!/usr/bin/env bash
# nbdcopy round trip: 64 MiB of random data into an export and back out, with
# one connection and with four (multi-conn); the checksums must all agree.
source "$(dirname "$0")/lib.sh"

size=$((64 * 1024 * 1024))
head -c "$size" /dev/urandom >"$WORK/source.img"
# Holes in the source too, so nbdcopy's zero/trim path reaches the server.
dd if=/dev/zero of="$WORK/source.img" bs=1M count=8 seek=20 conv=notrunc status=none
fallocate --punch-hole --offset $((40 * 1024 * 1024)) --length $((8 * 1024 * 1024)) "$WORK/source.img"
truncate -s "$size" "$WORK/single.img" "$WORK/multi.img"
# Fill the targets first, so zeroes that are not written would show.
head -c "$size" /dev/urandom >"$WORK/single.img"
head -c "$size" /dev/urandom >"$WORK/multi.img"
socket=$WORK/lunad.sock
port=$(free_port)
luna_start --nbd "127.0.0.1:$port" --unix "$socket" \
  --export "single=$WORK/single.img" --export "multi=$WORK/multi.img,aio=threads"

sum() { sha256sum "$1" | cut -d' ' -f1; }
want=$(sum "$WORK/source.img")

nbdcopy --connections=1 "$WORK/source.img" "nbd+unix:///single?socket=$socket" \
  || fail "nbdcopy into export single"
nbdcopy --connections=1 "nbd+unix:///single?socket=$socket" "$WORK/single.out" \
  || fail "nbdcopy out of export single"
[ "$(sum "$WORK/single.out")" = "$want" ] || fail "copied out of export single: checksum differs"
[ "$(sum "$WORK/single.img")" = "$want" ] || fail "export single's backing file: checksum differs"
pass "nbdcopy single connection: source, backing file and copy-out agree"

nbdcopy --connections=4 --requests=16 "$WORK/source.img" "nbd://127.0.0.1:$port/multi" \
  || fail "nbdcopy --connections=4 into export multi"
nbdcopy --connections=4 --requests=16 "nbd://127.0.0.1:$port/multi" "$WORK/multi.out" \
  || fail "nbdcopy --connections=4 out of export multi"
[ "$(sum "$WORK/multi.out")" = "$want" ] || fail "copied out of export multi: checksum differs"
[ "$(sum "$WORK/multi.img")" = "$want" ] || fail "export multi's backing file: checksum differs"
pass "nbdcopy 4 connections: source, backing file and copy-out agree"

# nbdcopy from export to export, both on lunad.
nbdcopy "nbd://127.0.0.1:$port/multi" "nbd+unix:///single?socket=$socket" || fail "nbdcopy export to export"
[ "$(sum "$WORK/single.img")" = "$want" ] || fail "export-to-export copy: checksum differs"
pass "nbdcopy export to export"

luna_alive
luna_stop
