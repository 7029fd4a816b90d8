#!/usr/bin/env bash
# luna-img resize against qemu-img resize on identical copies: qcow2 growth within the L1
# table and across it (512-byte clusters: the L1 table moves many times), growth with
# metadata, falloc and full preallocation, shrinks that drop data, L2 tables and file length,
# images with internal snapshots, extended L2 and external data files, raw files (plain,
# falloc, full): same messages, same virtual size (qemu-img info), same content where both
# keep it (qemu-img compare), qemu-img check clean, preallocated ranges allocated as qemu-img
# allocates them (qemu-img map) and read as zeroes.  lunad serves a resized image at its new
# size.  Errors match qemu-img's messages and exit codes.
source "$(dirname "$0")/lib.sh"

need_luna_img qemu-img qemu-io
cd "$WORK"

as_luna() { sed -e 's/^qemu-img: /luna-img: /' -e "s/Try 'qemu-img /Try 'luna-img /" "$1"; }
size_of() { qemu-img info --output=json "$@" | "$SYSTEM_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }
# The guest ranges that are allocated, merged where adjacent: [start, length, data] runs.
allocated() { qemu-img map --output=json "$@" | "$SYSTEM_PYTHON" -c '
import json, sys
runs = []
for e in json.load(sys.stdin):
    if not e["present"]:
        continue
    if runs and runs[-1][0] + runs[-1][1] == e["start"] and runs[-1][2] == e["data"]:
        runs[-1][1] += e["length"]  # host layouts may differ: only the guest ranges count
    else:
        runs.append([e["start"], e["length"], e["data"]])
print(runs)'; }

# resize_both LABEL IMAGE-A IMAGE-B ARGS...: qemu-img on A, luna-img on B; same output and exit.
resize_both() {
  local label=$1 a=$2 b=$3; shift 3
  local qs=0 ls=0 args=("$@")
  local last=$((${#args[@]} - 1))
  qemu-img resize "${args[@]:0:$last}" "$a" "${args[$last]}" >q.out 2>q.err || qs=$?
  "$LUNA_IMG" resize "${args[@]:0:$last}" "$b" "${args[$last]}" >l.out 2>l.err || ls=$?
  [ "$qs" = "$ls" ] || fail "$label: luna-img exited $ls, qemu-img $qs ($(cat l.err))"
  cmp -s q.out l.out || fail "$label: output differs: $(cat l.out) / $(cat q.out)"
  diff <(as_luna q.err | grep -v "^WARNING\|^  " | sed "s#'$a'#'$b'#g") l.err >/dev/null ||
    fail "$label: messages differ: $(diff <(as_luna q.err | grep -v "^WARNING\|^  ") l.err)"
  [ "$ls" != 0 ] && return 0
  [ "$(size_of "$a")" = "$(size_of "$b")" ] || fail "$label: size $(size_of "$b"), qemu-img $(size_of "$a")"
}

check_pair() { # check_pair LABEL A B: both clean, same content
  for image in "$2" "$3"; do
    qemu-img check "$image" >check.out 2>&1 || { cat check.out; fail "$1: qemu-img check $image failed"; }
    grep -q leaked check.out && { cat check.out; fail "$1: $image leaks"; }
  done
  qemu-img compare -q "$2" "$3" || fail "$1: the images read differently"
}

# A qcow2 image with data in several L2 tables, copied for both tools.
fresh() { # fresh OPTIONS SIZE
  rm -f q.qcow2 l.qcow2
  qemu-img create -q -f qcow2 -o "$1" q.qcow2 "$2"
  qemu-io -f qcow2 -c 'write -P 1 0 100k' -c 'write -z 200k 64k' -c 'write -P 2 1M 1M' q.qcow2 >/dev/null
  cp q.qcow2 l.qcow2
}

for options in "compat=1.1" "compat=0.10" "cluster_size=512" "extended_l2=on,cluster_size=64k"; do
  fresh "$options" 4M
  resize_both "$options: grow" q.qcow2 l.qcow2 64M
  check_pair "$options: grow" q.qcow2 l.qcow2
  resize_both "$options: grow by" q.qcow2 l.qcow2 +1G
  check_pair "$options: grow by" q.qcow2 l.qcow2
  qemu-io -c 'write -P 3 1000M 1M' q.qcow2 >/dev/null
  qemu-io -c 'write -P 3 1000M 1M' l.qcow2 >/dev/null
  resize_both "$options: shrink refused" q.qcow2 l.qcow2 1M
  resize_both "$options: shrink" q.qcow2 l.qcow2 --shrink 1500k
  check_pair "$options: shrink" q.qcow2 l.qcow2
  lsize=$(stat -c %s l.qcow2) qsize=$(stat -c %s q.qcow2)
  [ "$lsize" -le $((qsize + 65536)) ] || fail "$options: after shrink luna's file is $lsize bytes, qemu's $qsize"
  resize_both "$options: shrink by" q.qcow2 l.qcow2 --shrink -- -700k
  check_pair "$options: shrink by" q.qcow2 l.qcow2
  pass "$options: grow to 64M and by 1G, shrink to 1500k and by 700k as qemu-img (file $lsize bytes, qemu's $qsize)"
done

# Preallocated growth: the new range is allocated as qemu-img allocates it and reads zeroes.
for mode in metadata falloc full; do
  fresh "compat=1.1" 2M
  resize_both "prealloc $mode" q.qcow2 l.qcow2 --preallocation=$mode 6M
  check_pair "prealloc $mode" q.qcow2 l.qcow2
  [ "$(allocated l.qcow2)" = "$(allocated q.qcow2)" ] ||
    fail "prealloc $mode: allocation $(allocated l.qcow2), qemu-img $(allocated q.qcow2)"
  qemu-io -c 'read -P 0 2M 4M' l.qcow2 | grep -q "read 4194304/4194304" || fail "prealloc $mode: not zeroes"
  ldisk=$(du -k l.qcow2 | cut -f1) qdisk=$(du -k q.qcow2 | cut -f1)
  [ "$ldisk" -ge $((qdisk - 256)) ] && [ "$ldisk" -le $((qdisk + 256)) ] ||
    fail "prealloc $mode: $ldisk KiB on disk, qemu-img $qdisk KiB"
  pass "preallocation=$mode: same allocation map, zeroes, $ldisk KiB on disk (qemu-img $qdisk KiB)"
done
# Preallocation over clusters freed by a shrink: they read as zeroes, not what they held.
fresh "compat=1.1" 4M
qemu-io -c 'write -P 7 1M 3M' l.qcow2 >/dev/null
"$LUNA_IMG" resize -q --shrink l.qcow2 1M
"$LUNA_IMG" resize -q --preallocation=metadata l.qcow2 4M
qemu-io -c 'read -P 0 1M 3M' l.qcow2 | grep -q "read 3145728/3145728" || fail "reused clusters do not read as zeroes"
pass "metadata preallocation over reused clusters reads zeroes"

# Images with internal snapshots (v3: allowed; v2: refused) and with an external data file.
fresh "compat=1.1" 4M
qemu-img snapshot -c s q.qcow2
qemu-img snapshot -c s l.qcow2
resize_both "v3 with a snapshot: grow" q.qcow2 l.qcow2 16M
resize_both "v3 with a snapshot: shrink" q.qcow2 l.qcow2 --shrink 1M
check_pair "v3 with a snapshot" q.qcow2 l.qcow2
qemu-img convert -l snapshot.name=s -O raw l.qcow2 l-snap.raw
qemu-img convert -l snapshot.name=s -O raw q.qcow2 q-snap.raw
cmp -s l-snap.raw q-snap.raw || fail "the snapshot of a resized image reads differently"
fresh "compat=0.10" 4M
qemu-img snapshot -c s q.qcow2
qemu-img snapshot -c s l.qcow2
resize_both "v2 with a snapshot" q.qcow2 l.qcow2 16M
rm -f q.qcow2 l.qcow2 q-data.raw l-data.raw
qemu-img create -q -f qcow2 -o data_file=q-data.raw q.qcow2 4M
qemu-img create -q -f qcow2 -o data_file=l-data.raw l.qcow2 4M
resize_both "data file: grow" q.qcow2 l.qcow2 8M
[ "$(stat -c %s l-data.raw)" = "$(stat -c %s q-data.raw)" ] || fail "data file: $(stat -c %s l-data.raw) bytes"
resize_both "data file: shrink" q.qcow2 l.qcow2 --shrink 2M
[ "$(stat -c %s l-data.raw)" = "$(stat -c %s q-data.raw)" ] || fail "data file: $(stat -c %s l-data.raw) bytes"
pass "snapshots (v3 resized, snapshot intact; v2 refused) and external data files (resized with the image)"

# Raw files.
for mode in off falloc full; do
  rm -f q.raw l.raw
  qemu-img create -q -f raw q.raw 1M
  qemu-io -f raw -c 'write -P 1 0 512k' q.raw >/dev/null
  cp q.raw l.raw
  resize_both "raw $mode: grow" q.raw l.raw -f raw --preallocation=$mode 5M
  cmp -s q.raw l.raw || fail "raw $mode: contents differ"
  [ "$(du -k l.raw | cut -f1)" = "$(du -k q.raw | cut -f1)" ] || fail "raw $mode: $(du -k l.raw) vs $(du -k q.raw)"
  resize_both "raw $mode: shrink" q.raw l.raw -f raw --shrink 100k
  cmp -s q.raw l.raw || fail "raw $mode: contents differ after shrink"
done
pass "raw files: grow (off, falloc, full) and shrink as qemu-img"

# lunad serves the new size.
rm -f s.qcow2
qemu-img create -q -f qcow2 s.qcow2 1M
"$LUNA_IMG" resize -q s.qcow2 3G
PORT=$(free_port)
luna_start --nbd "127.0.0.1:$PORT" --export "s=$WORK/s.qcow2,format=qcow2"
[ "$(nbdinfo --size "nbd://127.0.0.1:$PORT/s")" = 3221225472 ] || fail "lunad serves $(nbdinfo --size "nbd://127.0.0.1:$PORT/s")"
luna_stop
pass "lunad serves the resized image at 3 GiB"

# Errors, as qemu-img.
rm -f q.qcow2 l.qcow2 q.raw l.raw
qemu-img create -q -f qcow2 q.qcow2 1M && cp q.qcow2 l.qcow2
qemu-img create -q -f raw q.raw 1M && cp q.raw l.raw
for args in "abc" "-- -5M" "0" "+16E" "--preallocation=bogus 8M" "--shrink --preallocation=full 512k" \
    "-f nosuch 2M" "-x 2M"; do
  read -r -a words <<<"$args"
  resize_both "error: $args" q.qcow2 l.qcow2 "${words[@]}"
done
resize_both "error: metadata on raw" q.raw l.raw -f raw --preallocation=metadata 2M
resize_both "error: raw given as qcow2" q.raw l.raw -f qcow2 2M
resize_both "error: missing file" missing.qcow2 missing.qcow2 2M
pass "error cases: same messages and exit codes as qemu-img"
