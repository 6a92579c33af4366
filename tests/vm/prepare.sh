#!/usr/bin/env bash
# Prepares what the netem VM needs, once, into a cache directory (default
# /var/cache/faultline-vm, or $FL_VM_CACHE):
#   - Debian's stock kernel (linux-image-amd64's dependency) unpacked with dpkg-deb -x (not
#     installed: the running kernel is left alone), with modules.dep from depmod;
#   - an initramfs: busybox (busybox-static) plus the modules needed to mount the host root
#     over 9p, and tests/vm/init.sh as /init.
# qemu-system-x86 and busybox-static are installed with apt-get when missing.
# Prints the cache directory on success. Idempotent: a complete cache is reused as is.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${FL_VM_CACHE:-/var/cache/faultline-vm}
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

need_apt=()
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
static_busybox() {
  local b out
  b=$(command -v busybox) || return 1
  out=$(ldd "$b" 2>&1 || true)
  [[ "$out" == *"not a dynamic"* ]]
}
static_busybox || need_apt+=(busybox-static)
command -v depmod >/dev/null || need_apt+=(kmod)
command -v cpio >/dev/null || need_apt+=(cpio)
if ((${#need_apt[@]})); then
  echo "prepare.sh: installing ${need_apt[*]} (apt-get)" >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove "${need_apt[@]}"; } >&2; then
    echo "prepare.sh: could not install ${need_apt[*]}; run as root: apt-get install qemu-system-x86 busybox-static kmod cpio" >&2
    exit 1
  fi
fi
static_busybox || { echo "prepare.sh: busybox is not statically linked; apt-get install busybox-static" >&2; exit 1; }
busybox=$(command -v busybox)

# The kernel package linux-image-amd64 points at.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
if [[ -z "$pkg" ]]; then
  echo "prepare.sh: apt knows no linux-image-amd64; run apt-get update (Debian 12 sources needed)" >&2
  exit 1
fi
kdir="$cache/$pkg"
if [[ ! -f "$kdir/.complete" ]]; then
  rm -rf "$kdir" "$cache/deb"
  mkdir -p "$cache/deb"
  (cd "$cache/deb" && apt-get download "$pkg" >&2) || {
    echo "prepare.sh: apt-get download $pkg failed (network? apt-get update?)" >&2
    exit 1
  }
  dpkg-deb -x "$cache"/deb/*.deb "$kdir"
  rm -rf "$cache/deb"
  kver=$(ls "$kdir/lib/modules")
  depmod -b "$kdir" "$kver"
  touch "$kdir/.complete"
fi
kver=$(ls "$kdir/lib/modules")
ln -sfn "$kdir" "$cache/kernel"

# initramfs: busybox, the 9p modules (with their dependencies, in load order), /init.
initrd="$cache/initrd-$kver.cpio.gz"
if [[ ! -f "$initrd" || "$here/init.sh" -nt "$initrd" || "$0" -nt "$initrd" ]]; then
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{bin,dev,proc,sys,host,mods}
  cp "$busybox" "$root/bin/busybox"
  for app in sh mount mkdir insmod cat echo poweroff sleep chroot; do ln -s busybox "$root/bin/$app"; done
  cp "$here/init.sh" "$root/init"
  chmod +x "$root/init"
  : >"$root/mods/order"
  for m in 9pnet_virtio 9p virtio_pci virtio_net; do
    modprobe -d "$kdir" -S "$kver" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" {print $2}'
  done | awk '!seen[$0]++' | while read -r ko; do
    cp "$ko" "$root/mods/"
    basename "$ko" >>"$root/mods/order"
  done
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
fi
ln -sfn "$initrd" "$cache/initrd.cpio.gz"
echo "$cache"
