#!/usr/bin/env bash
# qemu-img over nbd:// (IPv4 and IPv6 TCP) and nbd+unix://: info, convert
# into the export, compare, convert out to qcow2 and compare again.
source "$(dirname "$0")/lib.sh"

size_mib=48
head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$WORK/local.img"
# A zero range and a real hole, so compare also checks the holes.
dd if=/dev/zero of="$WORK/local.img" bs=1M count=4 seek=8 conv=notrunc status=none
fallocate --punch-hole --offset $((30 * 1024 * 1024)) --length $((6 * 1024 * 1024)) "$WORK/local.img"
for name in v4 v6 unix; do truncate -s ${size_mib}M "$WORK/$name.img"; done

port=$(free_port)
socket=$WORK/lunad.sock
listen=(--nbd "127.0.0.1:$port")
have_v6=0
if "$SYSTEM_PYTHON" -c "import socket; s = socket.socket(socket.AF_INET6); s.bind(('::1', $port))" 2>/dev/null; then
  listen+=(--nbd "[::1]:$port")
  have_v6=1
else
  echo "note: IPv6 loopback unavailable, IPv6 part skipped"
fi
luna_start "${listen[@]}" --unix "$socket" \
  --export "v4=$WORK/v4.img" --export "v6=$WORK/v6.img" --export "unix=$WORK/unix.img"

declare -A uri=(
  [v4]="nbd://127.0.0.1:$port/v4"
  [v6]="nbd://[::1]:$port/v6"
  [unix]="nbd+unix:///unix?socket=$socket"
)
for name in v4 v6 unix; do
  [ "$name" = v6 ] && [ $have_v6 -eq 0 ] && continue
  u=${uri[$name]}
  qemu-img info --output=json "$u" >"$WORK/info.json" || fail "qemu-img info $u"
  "$SYSTEM_PYTHON" - "$WORK/info.json" $((size_mib * 1024 * 1024)) <<'PY' || fail "qemu-img info $u"
import json, sys
info = json.load(open(sys.argv[1]))
if info["virtual-size"] != int(sys.argv[2]) or info["format"] != "raw":
    print(info); sys.exit(1)
PY
  qemu-img convert -n -f raw -O raw "$WORK/local.img" "$u" || fail "qemu-img convert local -> $u"
  qemu-img compare -f raw -F raw "$u" "$WORK/local.img" || fail "qemu-img compare $u local.img"
  cmp "$WORK/local.img" "$WORK/$name.img" || fail "backing file of $name differs from the source"
  qemu-img convert -f raw -O qcow2 "$u" "$WORK/$name.qcow2" || fail "qemu-img convert $u -> qcow2"
  qemu-img compare -f qcow2 -F raw "$WORK/$name.qcow2" "$WORK/local.img" || fail "qcow2 copy of $u differs"
  # Write a change through NBD and check compare notices it.
  qemu-io -f raw -c 'write -P 0x5a 12345 3' "$u" >/dev/null || fail "qemu-io write to $u"
  if qemu-img compare -q -f raw -F raw "$u" "$WORK/local.img"; then
    fail "qemu-img compare did not notice a changed byte on $u"
  fi
  pass "qemu-img info/convert/compare over $u"
done

luna_alive
luna_stop
