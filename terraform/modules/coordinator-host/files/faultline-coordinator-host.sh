#!/usr/bin/env bash
# Installs, starts, stops and removes the Faultline coordinator on this host for
# terraform/modules/coordinator-host (over SSH, and from cloud-init). The files are installed
# by the repository's scripts/install-host.sh (binary, unit, sysusers user `faultline`, env and
# TOML); this adds the certificates, the settings, starting it and an uninstall.
#
#   faultline-coordinator-host.sh install   WORK_DIR   (WORK_DIR holds settings.env and the bundle)
#   faultline-coordinator-host.sh uninstall PREFIX
#
# install_mode (settings.env MODE):
#   systemd  faultline-coordinator.service with its sandbox, enabled and started (prefix /);
#   process  where systemd is not PID 1: the coordinator runs in its own session as the user
#            faultline (setpriv: that uid and gid, no capabilities, no-new-privs, umask 0077),
#            log PREFIX/var/log/faultline-coordinator.log, pid PREFIX/run/faultline-coordinator.pid;
#            nothing restarts it and the unit's sandbox does not apply;
#   auto     systemd when systemd is PID 1 and the prefix is /, process otherwise.
set -euo pipefail

rel_bin=usr/local/bin/faultline-coordinator
rel_ctl=usr/local/bin/faultctl
rel_unit=etc/systemd/system/faultline-coordinator.service
rel_wants=etc/systemd/system/multi-user.target.wants/faultline-coordinator.service
rel_sysusers=usr/lib/sysusers.d/faultline.conf
rel_etc=etc/faultline
rel_doc=usr/share/doc/faultline/bare-metal.md
rel_state=var/lib/faultline-coordinator
rel_log=var/log/faultline-coordinator.log
rel_pid=run/faultline-coordinator.pid
rel_manifest=etc/faultline/.terraform-coordinator-created
rel_mode=etc/faultline/.terraform-coordinator-mode
# Candidate directories and account files install may create, deepest first.
made=(etc/systemd/system/multi-user.target.wants etc/systemd/system etc/systemd etc/faultline/tls
  etc/faultline etc/passwd etc/group etc/shadow etc/gshadow etc/passwd- etc/group- etc/shadow-
  etc/gshadow- etc/.pwd.lock etc usr/local/bin usr/local usr/lib/sysusers.d usr/lib
  usr/share/doc/faultline usr/share/doc usr/share usr var/lib/faultline-coordinator var/lib
  var/log var run)

p() { if [ "$prefix" = / ]; then echo "/$1"; else echo "$prefix/$1"; fi; }

systemd_running() { [ -d /run/systemd/system ]; }

setenv() {
  if grep -q "^#\{0,1\}$2=" "$1"; then
    local tmp
    tmp="$(mktemp "$1.XXXXXX")"
    awk -v k="$2" -v v="$3" 'BEGIN { done = 0 }
      ($0 ~ "^#?" k "=") { if (!done) { print k "=" v; done = 1 }; next } { print }' "$1" >"$tmp"
    chmod --reference="$1" "$tmp"
    chown --reference="$1" "$tmp"
    mv "$tmp" "$1"
  else
    echo "$2=$3" >>"$1"
  fi
}

# fetch DEST URL SHA256: the file copied into the staging dir (an ELF), or downloaded and checked.
fetch() {
  if [ -s "$1" ] && [ "$(head -c 4 "$1")" = $'\x7fELF' ]; then
    chmod 0755 "$1"
    return 0
  fi
  if [ "$2" = none ]; then
    echo "error: no $(basename "$1") binary: set its _path or _url variable" >&2
    exit 2
  fi
  echo "    downloading $2"
  if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 5 -o "$1" "$2"; else wget -q -O "$1" "$2"; fi
  if ! echo "$3  $1" | sha256sum -c --status -; then
    echo "error: $2 does not have the sha256 $3 (got $(sha256sum "$1" | cut -d' ' -f1))" >&2
    exit 2
  fi
  chmod 0755 "$1"
}

pid_of() {
  local pid
  [ -s "$(p "$rel_pid")" ] || return 1
  pid="$(cat "$(p "$rel_pid")")"
  [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(p "$rel_bin")" ] || return 1
  echo "$pid"
}

start_process() {
  local env_file log uid gid pid
  env_file="$(p "$rel_etc")/coordinator.env"
  log="$(p "$rel_log")"
  uid="$(awk -F: '$1 == "faultline" {print $3}' "$(p etc/passwd)")"
  gid="$(awk -F: '$1 == "faultline" {print $3}' "$(p etc/group)")"
  install -d -m 0755 "$(dirname "$log")" "$(dirname "$(p "$rel_pid")")"
  install -d -m 0700 -o "$uid" -g "$gid" "$(p "$rel_state")"
  : >>"$log"
  chown "$uid:$gid" "$log"
  (
    set -a
    # shellcheck disable=SC1090
    . "$env_file"
    set +a
    umask 0077
    exec setsid setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all \
      --bounding-set=-all --no-new-privs "$(p "$rel_bin")" </dev/null >>"$log" 2>&1
  ) &
  pid=$!
  echo "$pid" >"$(p "$rel_pid")"
  sleep 1
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "error: the coordinator exited at start; its log ($log):" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  echo "    started faultline-coordinator as pid $pid, uid $uid (install_mode process; log $log)"
}

wait_ready() {
  local i
  if [ "${WAIT_READY_SECONDS:-0}" -eq 0 ]; then return 0; fi
  if ! command -v curl >/dev/null 2>&1; then
    echo "    not waiting for /readyz: curl is not installed on this host"
    return 0
  fi
  for ((i = 0; i < WAIT_READY_SECONDS * 4; i++)); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$METRICS_PORT/readyz" 2>/dev/null; then
      echo "    the coordinator is ready"
      return 0
    fi
    sleep 0.25
  done
  echo "error: the coordinator was not ready within ${WAIT_READY_SECONDS}s; last log lines:" >&2
  if [ "$MODE" = systemd ]; then journalctl -u faultline-coordinator -n 30 --no-pager >&2 || true; else tail -n 30 "$(p "$rel_log")" >&2; fi
  exit 1
}

install_coordinator() {
  local work="$1" created=() d parts=(coordinator)
  # shellcheck disable=SC1091
  . "$work/settings.env"
  prefix="$PREFIX"
  if [ "$MODE" = auto ]; then
    if systemd_running && [ "$prefix" = / ]; then MODE=systemd; else MODE=process; fi
  fi
  if [ "$MODE" = systemd ] && ! systemd_running; then
    echo "error: install_mode is systemd but systemd is not PID 1 on this host (use process or auto)" >&2
    exit 2
  fi
  echo "==> faultline-coordinator: install_mode $MODE, prefix $prefix"
  fetch "$work/bin/faultline-coordinator" "$BINARY_URL" "$BINARY_SHA256"
  if [ -s "$work/bin/faultctl" ] && [ "$(head -c 4 "$work/bin/faultctl")" = $'\x7fELF' ]; then
    chmod 0755 "$work/bin/faultctl"
    parts+=(faultctl)
  fi
  for d in "${made[@]}"; do [ -e "$(p "$d")" ] || created+=("$d"); done
  mkdir -p "$prefix"
  local args=(--root "$prefix" --bin-dir "$work/bin")
  [ "$MODE" = systemd ] || args+=(--no-enable)
  bash "$work/scripts/install-host.sh" "${args[@]}" "${parts[@]}"
  printf '%s\n' "${created[@]}" >"$(p "$rel_manifest")"
  echo "$MODE" >"$(p "$rel_mode")"
  local gid etc tls
  gid="$(awk -F: '$1 == "faultline" {print $3}' "$(p etc/group)")"
  etc="$(p "$rel_etc")"
  tls="$etc/tls"
  install -d -m 0750 -g "$gid" "$tls"
  install -m 0640 -g "$gid" "$work/coordinator/dist/coordinator.toml" "$etc/coordinator.toml"
  for f in ca.pem coordinator.pem coordinator-key.pem issuer.pem issuer-key.pem; do
    [ ! -s "$work/tls/$f" ] || install -m 0640 -g "$gid" "$work/tls/$f" "$tls/$f"
  done
  local env_file="$etc/coordinator.env"
  setenv "$env_file" FAULTLINE_LISTEN "$LISTEN_ADDRESS:$GRPC_PORT"
  setenv "$env_file" FAULTLINE_METRICS_LISTEN "$LISTEN_ADDRESS:$METRICS_PORT"
  setenv "$env_file" FAULTLINE_DATA_DIR "$(p "$rel_state")"
  setenv "$env_file" FAULTLINE_CERTS_DIR "$tls"
  setenv "$env_file" FAULTLINE_CONFIG "$etc/coordinator.toml"
  if [ -s "$tls/issuer.pem" ]; then
    setenv "$env_file" FAULTLINE_ENROLL_LISTEN "$LISTEN_ADDRESS:$ENROLL_PORT"
    setenv "$env_file" FAULTLINE_ISSUER_CERT "$tls/issuer.pem"
    setenv "$env_file" FAULTLINE_ISSUER_KEY "$tls/issuer-key.pem"
    setenv "$env_file" FAULTLINE_AGENT_CERT_TTL "$AGENT_CERT_TTL"
  else
    setenv "$env_file" FAULTLINE_ENROLL_LISTEN none
  fi
  if [ "$MODE" = systemd ]; then
    systemctl daemon-reload
    systemctl start faultline-coordinator.service
    echo "    started faultline-coordinator.service (install_mode systemd)"
  else
    start_process
  fi
  wait_ready
}

uninstall_coordinator() {
  prefix="$1"
  local pid i d
  if [ -s "$(p "$rel_mode")" ]; then
    MODE="$(cat "$(p "$rel_mode")")"
  elif systemd_running && [ "$prefix" = / ]; then
    MODE=systemd
  else
    MODE=process
  fi
  echo "==> faultline-coordinator: uninstall (install_mode $MODE, prefix $prefix)"
  if [ "$MODE" = systemd ] && systemd_running; then
    # SIGTERM: running experiments are aborted and the agents' reverts awaited.
    systemctl disable --now faultline-coordinator.service || true
  elif pid="$(pid_of)"; then
    kill -TERM "$pid"
    for ((i = 0; i < 300; i++)); do
      [ -d "/proc/$pid" ] || break
      sleep 0.1
    done
    if [ -d "/proc/$pid" ]; then
      echo "    the coordinator did not exit within 30 s of SIGTERM: SIGKILL"
      kill -KILL "$pid" || true
    fi
    echo "    stopped faultline-coordinator pid $pid"
  else
    echo "    no running coordinator (pid file absent or stale)"
  fi
  local manifest=()
  if [ -f "$(p "$rel_manifest")" ]; then mapfile -t manifest <"$(p "$rel_manifest")"; fi
  rm -f "$(p "$rel_bin")" "$(p "$rel_ctl")" "$(p "$rel_unit")" "$(p "$rel_wants")" "$(p "$rel_log")" "$(p "$rel_pid")"
  rm -f "$(p "$rel_etc")"/{coordinator.env,coordinator.toml} "$(p "$rel_manifest")" "$(p "$rel_mode")"
  rm -f "$(p "$rel_etc")"/tls/{ca.pem,coordinator.pem,coordinator-key.pem,issuer.pem,issuer-key.pem}
  # The store holds the experiment history and audit log: uninstall removes it (keep a copy
  # first if you need them; docs/bare-metal.md).
  rm -rf "$(p "$rel_state")"
  [ -e "$(p usr/local/bin/faultline-agent)" ] || rm -f "$(p "$rel_doc")"
  if [ "$MODE" = systemd ] && systemd_running; then systemctl daemon-reload; fi
  rm -f "$(p "$rel_sysusers")"
  # What install created: account files in a prefix (sysusers made them there) and
  # directories, when empty. On / the user faultline stays (`userdel faultline` removes it).
  for d in "${made[@]}"; do
    for m in "${manifest[@]}"; do
      [ "$m" = "$d" ] || continue
      if [ -f "$(p "$d")" ] && [ "$prefix" != / ]; then
        rm -f "$(p "$d")"
      elif [ -d "$(p "$d")" ]; then
        rmdir "$(p "$d")" 2>/dev/null || true
      fi
    done
  done
  echo "    removed faultline-coordinator from $prefix"
}

case "${1:-}" in
install) install_coordinator "${2:?install needs the work dir}" ;;
uninstall) uninstall_coordinator "${2:?uninstall needs the prefix}" ;;
*)
  echo "usage: faultline-coordinator-host.sh install WORK_DIR | uninstall PREFIX" >&2
  exit 2
  ;;
esac
