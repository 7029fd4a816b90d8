#!/usr/bin/env bash
# Install the Debian packages luna needs, only those missing.  Idempotent.
#   deploy/install-deps.sh          build + test dependencies (what tests/run.sh needs)
#   deploy/install-deps.sh build    only what building and running lunad needs
set -euo pipefail

build_packages=(
  cmake make gcc pkg-config
  libev-dev liburing-dev libinih-dev libsystemd-dev
  zlib1g-dev libzstd-dev # qcow2 compressed clusters
  libjson-c-dev         # luna-img info --output=json
  libnbd-bin            # nbdinfo: the quick start's connect hint works out of the box
  libnbd-dev            # remote NBD disks (block/nbd_client)
  libiscsi-dev          # remote iSCSI disks (block/iscsi_client)
  nettle-dev            # iSCSI CHAP (MD5)
  libisal-dev           # iSCSI digests (CRC32C, ISA-L)
)
test_packages=(
  libcriterion-dev      # unit tests
  libnbd-dev libnbd-bin python3-libnbd   # libnbd test programs, nbdinfo, nbdcopy, nbdsh
  qemu-utils            # qemu-img, qemu-io, qemu-nbd (interop tests and benchmark peer)
  qemu-block-extra      # qemu-img/qemu-io iscsi:// (interop with the iSCSI target)
  nbdkit                # benchmark peer
  fio                   # ioengine=nbd verify runs and benchmarks
  lvm2                  # LVM tests build volume groups with lvm's own tools
  tgt libiscsi-bin      # an iSCSI target (tgtd) and libiscsi's tools for the remote-disk tests
  util-linux procps iproute2 psmisc
  qemu-system-x86       # tests/vmm/nested_kvm.sh: TCG guest with AMD SVM, gives a nested /dev/kvm
  busybox-static        # the nested guests' /init, shell and applets
  cpio xz-utils gzip    # initramfs images; .ko.xz modules and the bzImage payload unpacked on the host
  kmod                  # depmod: modules.dep for the hand-unpacked Debian kernel (nested_kvm.sh)
  libc6-dev             # gcc -static for the in-guest KVM smoke program
)

case "${1:-all}" in
  build) wanted=("${build_packages[@]}") ;;
  all|test) wanted=("${build_packages[@]}" "${test_packages[@]}") ;;
  *) echo "usage: $0 [build|all]" >&2; exit 2 ;;
esac

missing=()
for package in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
# De-duplicate (a package may be in both lists).
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#wanted[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
