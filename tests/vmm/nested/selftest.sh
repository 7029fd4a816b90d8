#!/usr/bin/env bash
# Self-test of tests/vmm/nested_kvm.sh: prepare, KVM in the outer guest (kvm_smoke),
# exit status propagation, the guest reaching a TCP server on the host through
# 10.0.2.2, and an inner-guest initramfs's contents.  About 30 s once the kernel is
# cached.  Ends with "N passed, N failed".
#   tests/vmm/nested/selftest.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
harness=$here/../nested_kvm.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/nested_selftest.XXXXXX")
server_pid=""
cleanup() {
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
check() { # NAME EXPECTED_STATUS COMMAND...: runs COMMAND, output in $work/NAME.out
  local name=$1 want=$2 rc=0 t0=$SECONDS
  shift 2
  "$@" >"$work/$name.out" 2>&1 || rc=$?
  if [ "$rc" -eq "$want" ]; then
    echo "PASS $name ($((SECONDS - t0)) s)"
    passed=$((passed + 1))
    return 0
  fi
  echo "FAIL $name: exit $rc, want $want ($((SECONDS - t0)) s); its output:"
  sed 's/^/    /' "$work/$name.out"
  failed=$((failed + 1))
  return 1
}
expect_output() { # NAME PATTERN: the output of check NAME matches PATTERN (grep -E)
  if grep -Eq "$2" "$work/$1.out"; then
    echo "PASS $1 output has /$2/"
    passed=$((passed + 1))
  else
    echo "FAIL $1 output lacks /$2/"
    failed=$((failed + 1))
  fi
}

check prepare 0 "$harness" prepare && expect_output prepare '^kernel=/.*vmlinuz' && expect_output prepare '^modules=/'

cat >"$work/kvm.sh" <<'EOF'
set -e
test -c /dev/kvm
echo "nested=$(cat /sys/module/kvm_amd/parameters/nested)"
kvm_smoke 1000
EOF
check kvm 0 "$harness" run -- "$work/kvm.sh" && expect_output kvm 'kvm_smoke: PASS'

echo 'exit 3' >"$work/exit3.sh"
check exit3 3 "$harness" run -- "$work/exit3.sh"

# A server on the host's loopback only, on a free port; the guest reaches it as 10.0.2.2.
mkdir "$work/www"
echo "luna-selftest-$$" >"$work/www/index.html"
python3 - "$work/www" "$work/port" <<'EOF' &
import functools, http.server, sys
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
handler = functools.partial(Quiet, directory=sys.argv[1])
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
open(sys.argv[2] + ".tmp", "w").write(str(server.server_address[1]))
__import__("os").rename(sys.argv[2] + ".tmp", sys.argv[2])
server.timeout = 120
server.serve_forever()
EOF
server_pid=$!
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")
# (busybox 1.35 wget -T N segfaults: the harness's --timeout bounds it instead.)
cat >"$work/net.sh" <<EOF
wget -q -O- "http://\$LUNA_HOST:$port/index.html"
EOF
check network 0 "$harness" run --timeout 120 -- "$work/net.sh" && expect_output network "^luna-selftest-$$\$"
kill "$server_pid" 2>/dev/null || true
server_pid=""

printf 'echo inner\n' >"$work/inner-init.sh"
check inner-initrd 0 "$harness" inner-initrd "$work/inner.cpio.gz" "$work/inner-init.sh"
if [ -f "$work/inner.cpio.gz" ]; then
  gzip -dc "$work/inner.cpio.gz" | cpio -t --quiet >"$work/inner.list"
  missing=""
  for module in virtio_mmio virtio_blk virtio_net virtio-rng virtio virtio_ring; do
    grep -qx "lib/modules/$module.ko" "$work/inner.list" || missing+=" $module"
  done
  if [ -z "$missing" ] && grep -qx init "$work/inner.list"; then
    echo "PASS inner-initrd lists /init and $(grep -c '^lib/modules/.*\.ko$' "$work/inner.list") modules"
    passed=$((passed + 1))
  else
    echo "FAIL inner-initrd: missing /init or modules:$missing"
    failed=$((failed + 1))
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
