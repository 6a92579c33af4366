#!/usr/bin/env bash
# Installs the Faultline agent and/or coordinator as systemd services on a bare-metal or VM host
# (docs/bare-metal.md). Run as root from a checkout after `cargo build --release`.
#
#   scripts/install-host.sh [--root DIR] [--bin-dir DIR] [--join-token-file F --ca F] [--no-enable] agent|coordinator|faultctl ...
#
# Puts the binaries in /usr/local/bin, the units in /etc/systemd/system, docs/bare-metal.md in
# /usr/share/doc/faultline, and the example env and TOML files in /etc/faultline unless a file is
# already there (your edits are never overwritten). For the coordinator it creates the system user `faultline` (systemd-sysusers).
# Then it enables the units; it starts nothing: fill in /etc/faultline/*.env and the
# certificates first, then `systemctl start faultline-agent` / `faultline-coordinator`.
#
# --root DIR   install into DIR instead of / (an image or a test); systemctl and
#              systemd-sysusers then work offline on DIR.
# --bin-dir    where the built binaries are (default: target/release of this checkout).
# --join-token-file F, --ca F  (agent) enroll instead of certificate files: the token (from
#              `faultctl tokens create`) goes to /etc/faultline/join-token (0600), the CA of
#              the coordinator's certificate to /etc/faultline/ca.pem, and agent.env uses them.
# --no-enable  install the units but leave them disabled and never call systemctl (a host or
#              container whose init is not systemd; terraform/modules/host's install_mode
#              "process").
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root=""
bin_dir="$here/target/release"
parts=()

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
token_file=""
ca_file=""
enable=1

while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --bin-dir) bin_dir="${2:?--bin-dir needs a directory}"; shift 2 ;;
    --join-token-file) token_file="${2:?--join-token-file needs a file}"; shift 2 ;;
    --ca) ca_file="${2:?--ca needs a file}"; shift 2 ;;
    --no-enable) enable=0; shift ;;
    -h|--help) usage; exit 0 ;;
    agent|coordinator|faultctl) parts+=("$1"); shift ;;
    *) echo "error: unknown argument '$1': give agent, coordinator and/or faultctl (see --help)" >&2; exit 2 ;;
  esac
done
if [ ${#parts[@]} -eq 0 ]; then
  echo "error: say what to install: agent, coordinator and/or faultctl (see --help)" >&2
  exit 2
fi
if { [ -n "$token_file" ] && [ -z "$ca_file" ]; } || { [ -z "$token_file" ] && [ -n "$ca_file" ]; }; then
  echo "error: --join-token-file and --ca go together (enrollment needs both)" >&2
  exit 2
fi
if [ -n "$token_file" ] && [ ! -s "$token_file" ]; then
  echo "error: --join-token-file $token_file is missing or empty" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: run as root (it writes /usr/local/bin, /etc/systemd/system and /etc/faultline)" >&2
  exit 2
fi
if [ -n "$root" ]; then
  mkdir -p "$root"
  root="$(cd "$root" && pwd)"
fi

# install_new SRC DEST MODE [GROUP]: copies SRC unless DEST exists.
install_new() {
  if [ -e "$2" ]; then
    echo "    kept $2 (already there)"
  else
    install -D -m "$3" -g "${4:-root}" "$1" "$2"
    echo "    wrote $2"
  fi
}

binary() {
  local exe="$bin_dir/$1"
  if [ ! -x "$exe" ]; then
    echo "error: $exe is missing: build it first (cargo build --release -p ${2:-$1}) or pass --bin-dir" >&2
    exit 2
  fi
  install -D -m 0755 "$exe" "$root/usr/local/bin/$1"
  echo "    wrote $root/usr/local/bin/$1"
}

systemctl_enable() {
  if [ "$enable" -eq 0 ]; then
    echo "    left $1 disabled (--no-enable)"
    return
  fi
  if [ -n "$root" ]; then
    systemctl --root="$root" enable "$1" >/dev/null
  else
    systemctl daemon-reload
    systemctl enable "$1" >/dev/null
  fi
  echo "    enabled $1 (not started)"
}

# The units' Documentation= page.
install -D -m 0644 "$here/docs/bare-metal.md" "$root/usr/share/doc/faultline/bare-metal.md"

for part in "${parts[@]}"; do
  echo "==> $part"
  case "$part" in
    faultctl)
      binary faultctl
      ;;
    agent)
      binary faultline-agent
      install -D -m 0644 "$here/agent/dist/faultline-agent.service" \
        "$root/etc/systemd/system/faultline-agent.service"
      echo "    wrote $root/etc/systemd/system/faultline-agent.service"
      install -d -m 0755 "$root/etc/faultline"
      install_new "$here/agent/dist/agent.env" "$root/etc/faultline/agent.env" 0600
      install_new "$here/agent/dist/agent.toml" "$root/etc/faultline/agent.toml" 0644
      if [ -n "$token_file" ]; then
        # The token is a secret: 0600, root only. The agent ignores it once enrolled.
        install -D -m 0600 "$token_file" "$root/etc/faultline/join-token"
        install -D -m 0644 "$ca_file" "$root/etc/faultline/ca.pem"
        sed -i -e 's|^FAULTLINE_CERTS_DIR=|#FAULTLINE_CERTS_DIR=|' \
          -e 's|^#FAULTLINE_CA=.*|FAULTLINE_CA=/etc/faultline/ca.pem|' \
          -e 's|^#FAULTLINE_JOIN_TOKEN_FILE=.*|FAULTLINE_JOIN_TOKEN_FILE=/etc/faultline/join-token|' \
          "$root/etc/faultline/agent.env"
        echo "    wrote $root/etc/faultline/join-token (0600) and ca.pem; agent.env enrolls with them"
      fi
      systemctl_enable faultline-agent.service
      ;;
    coordinator)
      binary faultline-coordinator
      install -D -m 0644 "$here/coordinator/dist/faultline.sysusers" \
        "$root/usr/lib/sysusers.d/faultline.conf"
      # sysusers locks $root/etc/passwd: etc must exist in a fresh root.
      install -d -m 0755 "$root/etc"
      if [ -n "$root" ]; then systemd-sysusers --root="$root" >/dev/null; else systemd-sysusers; fi
      echo "    system user faultline ready"
      install -D -m 0644 "$here/coordinator/dist/faultline-coordinator.service" \
        "$root/etc/systemd/system/faultline-coordinator.service"
      echo "    wrote $root/etc/systemd/system/faultline-coordinator.service"
      install -d -m 0755 "$root/etc/faultline"
      gid="$(awk -F: '$1 == "faultline" {print $3}' "$root/etc/group")"
      install_new "$here/coordinator/dist/coordinator.env" "$root/etc/faultline/coordinator.env" 0640 "$gid"
      install_new "$here/coordinator/dist/coordinator.toml" "$root/etc/faultline/coordinator.toml" 0640 "$gid"
      systemctl_enable faultline-coordinator.service
      ;;
  esac
done

cat <<'EOF'
==> next
    1. certificates into /etc/faultline/tls (faultctl certs init; docs/bare-metal.md): the
       coordinator's key readable by group faultline (chgrp faultline, chmod 0640); an
       agent installed with --join-token-file needs none (it enrolls at its first start);
    2. edit /etc/faultline/*.env (the coordinator's address, this host's node name);
    3. systemctl start faultline-coordinator / faultline-agent, and check /readyz.
EOF
