#!/usr/bin/env bash
# Installs, starts, stops and removes the Faultline agent on this host for
# terraform/modules/host (over SSH, and from cloud-init). The files themselves are installed by
# the repository's scripts/install-host.sh; this adds what a Terraform install needs around it:
# an install prefix, the agent's settings in agent.env, starting it (systemd, or a plain
# background process where systemd is not PID 1) and an uninstall that leaves nothing behind.
#
#   faultline-host.sh install   WORK_DIR   (WORK_DIR holds settings.env and the bundle)
#   faultline-host.sh uninstall PREFIX
#
# install_mode (settings.env MODE):
#   systemd  the unit faultline-agent.service, enabled and started (prefix must be /);
#   process  no init system involved: the agent runs in its own session (setsid) with its
#            output in PREFIX/var/log/faultline-agent.log and its pid in
#            PREFIX/run/faultline-agent.pid; nothing restarts it if it dies and nothing
#            starts it at boot (a container, a host without systemd, a test root);
#   auto     systemd when systemd is PID 1 and the prefix is /, process otherwise.
set -euo pipefail

# Paths below the prefix; uninstall removes exactly these (and the directories install made).
rel_bin=usr/local/bin/faultline-agent
rel_unit=etc/systemd/system/faultline-agent.service
rel_wants=etc/systemd/system/multi-user.target.wants/faultline-agent.service
rel_etc=etc/faultline
rel_doc=usr/share/doc/faultline/bare-metal.md
rel_state=var/lib/faultline
rel_log=var/log/faultline-agent.log
rel_pid=run/faultline-agent.pid
rel_manifest=etc/faultline/.terraform-created-dirs
rel_mode=etc/faultline/.terraform-install-mode
# Candidate directories install-host.sh and this script may create, deepest first.
dirs=(etc/systemd/system/multi-user.target.wants etc/systemd/system etc/systemd etc/faultline etc
  usr/local/bin usr/local usr/share/doc/faultline usr/share/doc usr/share usr
  var/lib/faultline var/lib var/log var run)

p() { if [ "$prefix" = / ]; then echo "/$1"; else echo "$prefix/$1"; fi; }

systemd_running() { [ -d /run/systemd/system ]; }

# setenv FILE KEY VALUE: sets KEY=VALUE in an env file (uncommenting or appending it).
setenv() {
  if grep -q "^#\{0,1\}$2=" "$1"; then
    local tmp
    tmp="$(mktemp "$1.XXXXXX")"
    awk -v k="$2" -v v="$3" 'BEGIN { done = 0 }
      ($0 ~ "^#?" k "=") { if (!done) { print k "=" v; done = 1 }; next } { print }' "$1" >"$tmp"
    chmod 0600 "$tmp"
    mv "$tmp" "$1"
  else
    echo "$2=$3" >>"$1"
  fi
}

pid_of_agent() {
  local pidfile pid
  pidfile="$(p "$rel_pid")"
  [ -s "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  # Only the agent this prefix started: a reused pid is someone else's.
  [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(p "$rel_bin")" ] || return 1
  echo "$pid"
}

start_process() {
  local env_file log pid
  env_file="$(p "$rel_etc")/agent.env"
  log="$(p "$rel_log")"
  install -d -m 0755 "$(dirname "$log")" "$(dirname "$(p "$rel_pid")")"
  # The unit's environment: only agent.env (EnvironmentFile=) and a PATH; LimitMEMLOCK.
  (
    ulimit -l unlimited 2>/dev/null || true
    set -a
    # shellcheck disable=SC1090
    . "$env_file"
    set +a
    exec setsid "$(p "$rel_bin")" </dev/null >>"$log" 2>&1
  ) &
  pid=$!
  echo "$pid" >"$(p "$rel_pid")"
  sleep 1
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "error: the agent exited at start; its log ($log):" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  echo "    started faultline-agent as pid $pid (install_mode process; log $log)"
}

# Waits up to WAIT seconds for /readyz (the agent has a session with the coordinator).
wait_ready() {
  local addr="${METRICS_LISTEN/0.0.0.0/127.0.0.1}" i
  if [ "${WAIT_READY_SECONDS:-0}" -eq 0 ] || [ "$METRICS_LISTEN" = none ]; then
    return 0
  fi
  if ! command -v curl >/dev/null 2>&1; then
    echo "    not waiting for /readyz: curl is not installed on this host"
    return 0
  fi
  for ((i = 0; i < WAIT_READY_SECONDS * 4; i++)); do
    if curl -fsS -o /dev/null "http://$addr/readyz" 2>/dev/null; then
      echo "    the agent is ready (it has a session with $COORDINATOR)"
      return 0
    fi
    sleep 0.25
  done
  echo "error: the agent was not ready within ${WAIT_READY_SECONDS}s (no session with $COORDINATOR); last log lines:" >&2
  if [ "$MODE" = systemd ]; then journalctl -u faultline-agent -n 30 --no-pager >&2 || true; else tail -n 30 "$(p "$rel_log")" >&2; fi
  exit 1
}

# The binary copied into the staging dir, or (no-binary.txt there, or nothing) downloaded
# and checked.
fetch_binary() {
  if [ -s "$1" ] && [ "$(head -c 4 "$1")" = $'\x7fELF' ]; then
    chmod 0755 "$1"
    return 0
  fi
  if [ "$BINARY_URL" = none ]; then
    echo "error: no agent binary: set agent_binary_path or agent_binary_url" >&2
    exit 2
  fi
  echo "    downloading $BINARY_URL"
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 5 -o "$1" "$BINARY_URL"
  else
    wget -q -O "$1" "$BINARY_URL"
  fi
  if ! echo "$BINARY_SHA256  $1" | sha256sum -c --status -; then
    echo "error: $BINARY_URL does not have agent_binary_sha256 $BINARY_SHA256 (got $(sha256sum "$1" | cut -d' ' -f1))" >&2
    exit 2
  fi
  chmod 0755 "$1"
}

install_agent() {
  local work="$1" created=() d
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
  echo "==> faultline-agent: install_mode $MODE, prefix $prefix"
  fetch_binary "$work/bin/faultline-agent"
  for d in "${dirs[@]}"; do [ -e "$(p "$d")" ] || created+=("$d"); done
  mkdir -p "$prefix"
  local args=(--root "$prefix" --bin-dir "$work/bin" --join-token-file "$work/join-token" --ca "$work/ca.pem")
  [ "$MODE" = systemd ] || args+=(--no-enable)
  bash "$work/scripts/install-host.sh" "${args[@]}" agent
  printf '%s\n' "${created[@]}" >"$(p "$rel_manifest")"
  echo "$MODE" >"$(p "$rel_mode")"
  # Our agent.toml (the limits) over the shipped example, and the settings in agent.env.
  install -m 0644 "$work/agent/dist/agent.toml" "$(p "$rel_etc")/agent.toml"
  local env_file
  env_file="$(p "$rel_etc")/agent.env"
  setenv "$env_file" FAULTLINE_COORDINATOR "$COORDINATOR"
  [ "$ENROLL_URL" = none ] || setenv "$env_file" FAULTLINE_ENROLL_URL "$ENROLL_URL"
  [ -z "$NODE_NAME" ] || setenv "$env_file" FAULTLINE_NODE_NAME "$NODE_NAME"
  [ -z "$LABELS" ] || setenv "$env_file" FAULTLINE_LABELS "$LABELS"
  setenv "$env_file" FAULTLINE_METRICS_LISTEN "$METRICS_LISTEN"
  setenv "$env_file" FAULTLINE_CA "$(p "$rel_etc")/ca.pem"
  setenv "$env_file" FAULTLINE_JOIN_TOKEN_FILE "$(p "$rel_etc")/join-token"
  setenv "$env_file" FAULTLINE_STATE_DIR "$(p "$rel_state")"
  setenv "$env_file" FAULTLINE_CONFIG "$(p "$rel_etc")/agent.toml"
  if [ "$MODE" = systemd ]; then
    systemctl daemon-reload
    systemctl start faultline-agent.service
    echo "    started faultline-agent.service (install_mode systemd)"
  else
    start_process
  fi
  wait_ready
}

uninstall_agent() {
  prefix="$1"
  local pid i d
  # The mode install resolved; without its record, what auto would choose.
  if [ -s "$(p "$rel_mode")" ]; then
    MODE="$(cat "$(p "$rel_mode")")"
  elif systemd_running && [ "$prefix" = / ]; then
    MODE=systemd
  else
    MODE=process
  fi
  echo "==> faultline-agent: uninstall (install_mode $MODE, prefix $prefix)"
  if [ "$MODE" = systemd ] && systemd_running; then
    # SIGTERM to the agent alone (KillMode=mixed): it reverts every fault, then exits.
    systemctl disable --now faultline-agent.service || true
  elif pid="$(pid_of_agent)"; then
    kill -TERM "$pid"
    # The unit's TimeoutStopSec: the agent reverts its faults before it exits.
    for ((i = 0; i < 600; i++)); do
      [ -d "/proc/$pid" ] || break
      sleep 0.1
    done
    if [ -d "/proc/$pid" ]; then
      echo "    the agent did not exit within 60 s of SIGTERM: SIGKILL (recovery below reverts what it held)"
      kill -KILL "$pid" || true
    fi
    echo "    stopped faultline-agent pid $pid"
  else
    echo "    no running agent (pid file absent or stale)"
  fi
  # Anything a killed agent left in its journal is reverted here (nothing found when clean).
  if [ -x "$(p "$rel_bin")" ] && [ -d "$(p "$rel_state")" ]; then
    local cfg=()
    [ ! -f "$(p "$rel_etc")/agent.toml" ] || cfg=(--config "$(p "$rel_etc")/agent.toml")
    "$(p "$rel_bin")" recover --state-dir "$(p "$rel_state")" "${cfg[@]}" 2>&1 | sed 's/^/    /'
  fi
  local manifest=()
  if [ -f "$(p "$rel_manifest")" ]; then mapfile -t manifest <"$(p "$rel_manifest")"; fi
  rm -f "$(p "$rel_bin")" "$(p "$rel_unit")" "$(p "$rel_wants")" "$(p "$rel_log")" "$(p "$rel_pid")"
  rm -f "$(p "$rel_etc")"/{agent.env,agent.toml,join-token,ca.pem} "$(p "$rel_manifest")" "$(p "$rel_mode")"
  rm -rf "$(p "$rel_state")"
  # The units' documentation, unless the coordinator (same page) is installed here too.
  [ -e "$(p usr/local/bin/faultline-coordinator)" ] || rm -f "$(p "$rel_doc")"
  if [ "$MODE" = systemd ] && systemd_running; then systemctl daemon-reload; fi
  # Directories: only those the install created, and only when empty.
  for d in "${dirs[@]}"; do
    for m in "${manifest[@]}"; do
      if [ "$m" = "$d" ] && [ -d "$(p "$d")" ]; then rmdir "$(p "$d")" 2>/dev/null || true; fi
    done
  done
  echo "    removed faultline-agent from $prefix"
}

case "${1:-}" in
install) install_agent "${2:?install needs the work dir}" ;;
uninstall) uninstall_agent "${2:?uninstall needs the prefix}" ;;
*)
  echo "usage: faultline-host.sh install WORK_DIR | uninstall PREFIX" >&2
  exit 2
  ;;
esac
