#!/usr/bin/env bash
# Set up a Debian machine for provision: system packages, npm dependencies, build.
# Safe to run again; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Programs provision runs (xz, sgdisk, debugfs, mtools, gpgv, ...) and the test tools
# (ignition-validate checks every Ignition config the tests write).
PACKAGES=(xz-utils zstd bzip2 gzip gdisk fdisk mtools dosfstools e2fsprogs gnupg gpgv
  ignition btrfs-progs util-linux mount coreutils time shellcheck systemd strace
  qemu-system-arm qemu-efi-aarch64 qemu-utils grub-common cpio binutils
  qemu-system-x86 ovmf seabios libxml2-utils openssh-client
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients openssh-server
  syslinux syslinux-common ipxe gcc libc6-dev zsh fish bmap-tools)
# bmap-tools: bmaptool, the second anchor of npm run bench (bench/flash.sh).
# zsh and fish: the shell completion tests drive bash, zsh and fish themselves.
# pxe-stick: syslinux (BIOS boot) and bookworm's ipxe (ipxe.lkrn; its 2019 EFI build is
# the one the tests expect to be refused); the tests' iPXE EFI comes from Debian trixie
# (fixtures/build-pxe-fixture.sh). libvirt and sshd: the qemu-test --connect tests run a real libvirtd (started by the test
# when none runs: there may be no systemd) behind a throw-away sshd on 127.0.0.1.
# The QEMU boot fixture is built from Debian arm64 packages (downloaded, never installed).
need_update=""
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "setup: adding the arm64 architecture to apt (for apt-get download pkg:arm64)"
  $SUDO dpkg --add-architecture arm64
  need_update=1
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] || [ -n "$need_update" ]; then
  [ ${#missing[@]} -gt 0 ] && echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a===20&&b<18)) { console.error("setup: Node.js >= 20.18 is needed, this is "+process.version); process.exit(1) }'
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund; fi
npm run --silent build
echo "setup: done. Try: npm run example"
