#!/bin/sh
# /init of the netem VM (busybox). Mounts the host root read-only over 9p at /host, gives it
# writable /tmp, /run, /var/tmp and live /proc, /sys, /dev, then runs, chrooted into the host
# root, the command passed on the kernel command line as fl.cmd=<base64> (with the kernel
# modules of the VM kernel from fl.kdir=<host path>), and powers off. The exit status is
# printed as "FL-VM-EXIT <status>".
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod "/mods/$m" 2>/dev/null; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host || {
  echo "FL-VM-EXIT 97 (cannot mount the host root over 9p)"
  poweroff -f
}
for d in proc sys dev; do mount --bind "/$d" "/host/$d"; done
for d in tmp run var/tmp; do mount -t tmpfs tmpfs "/host/$d"; done
mount -t bpf bpf /host/sys/fs/bpf 2>/dev/null
mount -t debugfs debugfs /host/sys/kernel/debug 2>/dev/null
cmd=""
kdir=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    fl.cmd=*) cmd="${arg#fl.cmd=}" ;;
    fl.kdir=*) kdir="${arg#fl.kdir=}" ;;
  esac
done
chroot /host /bin/bash -c '
  kdir=$1; cmd=$(echo "$2" | base64 -d)
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp
  kver=$(ls "$kdir/lib/modules")
  for m in sch_netem sch_htb sch_tbf sch_ingress cls_bpf veth; do
    modprobe -d "$kdir" -S "$kver" "$m" || echo "FL-VM: modprobe $m failed"
  done
  ip link set lo up
  cd /tmp
  bash -c "$cmd"
  echo "FL-VM-EXIT $?"
' fl "$kdir" "$cmd"
poweroff -f
