#!/usr/bin/env bash
# Boots Debian's stock kernel under QEMU (-accel tcg) with the host root shared read-only over
# 9p, runs COMMAND (bash, chrooted into the host root, cwd /tmp, the VM kernel's netem/htb/tbf
# /veth modules loaded) and exits with its status. Console output goes to stdout.
#   tests/vm/run.sh 'COMMAND'
# Needs tests/vm/prepare.sh to have run (it runs it). Environment: FL_VM_CACHE (cache dir),
# FL_VM_TIMEOUT (seconds, default 170), FL_VM_MEM (MiB, default 1024).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:?usage: run.sh COMMAND}
cache=$("$here/prepare.sh")
kdir=$(readlink -f "$cache/kernel")
kver=$(ls "$kdir/lib/modules")
b64=$(printf '%s' "$cmd" | base64 -w0)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
timeout "${FL_VM_TIMEOUT:-170}" qemu-system-x86_64 \
  -accel tcg -cpu max -smp 2 -m "${FL_VM_MEM:-1024}" \
  -kernel "$kdir/boot/vmlinuz-$kver" -initrd "$cache/initrd.cpio.gz" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 fl.kdir=$kdir fl.cmd=$b64" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -nographic -no-reboot -nic none -serial mon:stdio </dev/null | tee "$out"
qemu=${PIPESTATUS[0]}
set -e
status=$(grep -a -o 'FL-VM-EXIT [0-9]*' "$out" | tail -1 | awk '{print $2}')
if [[ -z "$status" ]]; then
  echo "run.sh: the VM ended without reporting an exit status (qemu exit $qemu)" >&2
  exit 98
fi
exit "$status"
