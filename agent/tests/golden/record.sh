#!/usr/bin/env bash
# Records the golden TCA_OPTIONS bytes of agent/tests/golden/cases.txt: what iproute2's `tc`
# sends (strace of its sendmsg) and what the kernel dumps back for the qdisc/class it created
# (strace of `tc qdisc|class show`'s recvmsg). Run as root:
#   agent/tests/golden/record.sh host [OUT_DIR]   # htb and tbf cases, on this machine's kernel
#   agent/tests/golden/record.sh vm   [OUT_DIR]   # netem cases; run inside the netem VM
#                                                  # (tests/vm/run.sh record does that)
# Needs: iproute2, strace, python3. Writes OUT_DIR/<name>.golden (default: next to this script).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
which=${1:?usage: record.sh host|vm [OUT_DIR]}
out=${2:-$here}
mkdir -p "$out"
if [[ "$which" == vm && -z "${FL_IN_VM:-}" ]]; then
  # Re-run this script inside the netem VM and split what it prints back into files.
  repo=$(cd "$here/../../.." && pwd)
  log=$(mktemp)
  "$repo/tests/vm/run.sh" "FL_IN_VM=1 $here/record.sh vm /tmp/golden && for f in /tmp/golden/*.golden; do echo \"=== \$(basename \$f)\"; cat \$f; done" | tr -d '\r' >"$log"
  python3 - "$log" "$out" <<'PY'
import sys, re
text = open(sys.argv[1], encoding="utf-8", errors="replace").read().split("\n")
cur = None
files = {}
for line in text:
    m = re.match(r"^=== (\S+\.golden)$", line)
    if m:
        cur = m.group(1); files[cur] = []; continue
    if line.startswith("FL-VM-EXIT"):
        cur = None
    if cur and re.match(r"^(# |command: |kind: |sent: |dump: )", line):
        files[cur].append(line)
for name, lines in files.items():
    open(f"{sys.argv[2]}/{name}", "w").write("\n".join(lines) + "\n")
    print("recorded", name[:-len(".golden")])
PY
  rm -f "$log"
  exit 0
fi
for tool in tc strace python3; do
  command -v "$tool" >/dev/null || { echo "record.sh: $tool is missing (apt-get install iproute2 strace python3)" >&2; exit 1; }
done
ns="fl-golden-$$"
trace=$(mktemp)
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -f "$trace"; }
trap cleanup EXIT

while IFS='|' read -r name handle kernel setup cmd; do
  [[ -z "$name" || "$name" == \#* || "$kernel" != "$which" ]] && continue
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$ns" link add v0 type veth peer name v1
  ip -n "$ns" link set v0 up
  ip -n "$ns" link set v1 up
  if [[ -n "$setup" ]]; then
    IFS=';' read -ra steps <<<"$setup"
    for step in "${steps[@]}"; do ip netns exec "$ns" $step; done
  fi
  strace -f -o "$trace" -e trace=sendmsg -e write=all ip netns exec "$ns" $cmd
  sent=$(python3 "$here/nlparse.py" sent "$handle" "$trace")
  if [[ "${handle: -4}" == "0000" ]]; then show="tc qdisc show dev v0"; else show="tc class show dev v0"; fi
  strace -f -o "$trace" -e trace=recvmsg -e read=all ip netns exec "$ns" $show >/dev/null
  dump=$(python3 "$here/nlparse.py" dump "$handle" "$trace")
  {
    echo "# Recorded by agent/tests/golden/record.sh $which on Linux $(uname -r), $(tc -V)"
    echo "command: $cmd"
    echo "kind: ${sent%% *}"
    echo "sent: ${sent#* }"
    echo "dump: ${dump#* }"
  } >"$out/$name.golden"
  echo "recorded $name"
done <"$here/cases.txt"
