#!/usr/bin/env bash
# `make demo`: a coordinator and two agents on this machine over mutual TLS on 127.0.0.1, then
# `faultctl agents list`, then a clean shutdown. Everything lives in one temporary directory
# (certificates, data, state, logs) that is removed on exit, success or failure or Ctrl-C.
#
# Environment:
#   FAULTLINE_BIN_DIR     where the binaries are (default: target/debug)
#   FAULTLINE_DEMO_KEEP=1 keep the temporary directory (logs) instead of removing it
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Only the flags below configure the processes: drop FAULTLINE_* settings from the caller's shell
# (the daemons read them as flag defaults), keeping this script's own two.
while read -r var; do
    case "$var" in
    FAULTLINE_BIN_DIR | FAULTLINE_DEMO_KEEP) ;;
    FAULTLINE_* | NODE_NAME) unset "$var" ;;
    esac
done < <(compgen -e)
bin_dir="${FAULTLINE_BIN_DIR:-$PWD/target/debug}"
connect_timeout_s=30
stop_timeout_s=15

say() { printf '==> %s\n' "$*"; }
fail() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

for b in faultctl faultline-coordinator faultline-agent; do
    [[ -x "$bin_dir/$b" ]] || fail "missing $bin_dir/$b: build with 'cargo build --workspace --bins' (make demo does)"
done
for c in python3 curl; do
    command -v "$c" >/dev/null 2>&1 || fail "$c is not installed: run scripts/install-deps.sh demo (as root) or install it"
done

tmp="$(mktemp -d -t faultline-demo.XXXXXX)"
pids=()  # in start order
names=() # same order as pids
declare -A stopped=()

# Stops every started process that still runs, newest first (agents before the coordinator, so
# they revert and say goodbye while it still listens). Returns 1 if one did not exit with 0.
stop_all() {
    local rc=0 i pid name status
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid="${pids[$i]}"
        name="${names[$i]}"
        [[ -n "${stopped[$pid]:-}" ]] && continue
        stopped[$pid]=1
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            local waited=0
            while kill -0 "$pid" 2>/dev/null && ((waited < stop_timeout_s * 10)); do
                sleep 0.1
                waited=$((waited + 1))
            done
            if kill -0 "$pid" 2>/dev/null; then
                echo "error: $name (pid $pid) did not stop within ${stop_timeout_s}s of SIGTERM; killing it" >&2
                kill -KILL "$pid" 2>/dev/null || true
                rc=1
            fi
        fi
        status=0
        wait "$pid" 2>/dev/null || status=$?
        if ((status == 0)); then
            say "stopped $name (pid $pid, exit 0)"
        else
            echo "error: $name (pid $pid) exited with status $status" >&2
            rc=1
        fi
    done
    return "$rc"
}

show_logs() {
    local log
    for log in "$tmp"/*.log; do
        [[ -f "$log" && "$log" != */certs-init.log ]] || continue
        echo "----- last 25 lines of $(basename "$log") -----" >&2
        tail -n 25 "$log" >&2 || true
    done
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all || rc=1
    if ((rc != 0 && rc != 130 && rc != 143)); then
        echo "error: demo failed (exit $rc); logs of each process follow" >&2
        show_logs
    fi
    if [[ "${FAULTLINE_DEMO_KEEP:-0}" == 1 ]]; then
        say "kept $tmp (FAULTLINE_DEMO_KEEP=1)"
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'echo; echo "interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

# Four distinct free loopback ports, chosen by the kernel (all held open until printed).
read -r grpc_port coord_metrics_port a_metrics_port b_metrics_port < <(
    python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
'
) || true
[[ -n "${b_metrics_port:-}" ]] || fail "could not pick free loopback ports with python3"

url="https://127.0.0.1:$grpc_port"
certs="$tmp/certs"
faultctl() { "$bin_dir/faultctl" --coordinator "$url" --certs-dir "$certs" --identity admin "$@"; }

# Runs "$@" in the background with its output in $tmp/<log>.log and remembers its PID.
start() {
    local name="$1" log="$2"
    shift 2
    "$@" >"$tmp/$log.log" 2>&1 &
    pids+=("$!")
    names+=("$name")
}

# Fails if the process started as $1 (name) has exited.
alive() {
    local i
    for i in "${!names[@]}"; do
        if [[ "${names[$i]}" == "$1" ]] && ! kill -0 "${pids[$i]}" 2>/dev/null; then
            fail "$1 exited early"
        fi
    done
}

now_ms() { date +%s%3N; }

say "working in $tmp"
say "creating certificates: faultctl certs init --dir $certs --agents demo-a,demo-b"
faultctl certs init --dir "$certs" --agents demo-a,demo-b >"$tmp/certs-init.log" 2>&1 ||
    fail "faultctl certs init failed: $(cat "$tmp/certs-init.log")"
say "  $(grep -c '^created' "$tmp/certs-init.log") files: CA, coordinator, admin/operator/viewer, agent-demo-a, agent-demo-b"

say "starting coordinator on 127.0.0.1:$grpc_port (metrics on 127.0.0.1:$coord_metrics_port)"
start faultline-coordinator coordinator \
    "$bin_dir/faultline-coordinator" \
    --listen "127.0.0.1:$grpc_port" \
    --metrics-listen "127.0.0.1:$coord_metrics_port" \
    --data-dir "$tmp/coordinator-data" \
    --certs-dir "$certs" \
    --lease 5s
deadline=$(($(now_ms) + 15000))
until curl -fsS -o /dev/null "http://127.0.0.1:$coord_metrics_port/readyz" 2>/dev/null; do
    alive faultline-coordinator
    (($(now_ms) < deadline)) || fail "coordinator not ready within 15 s (GET /readyz)"
    sleep 0.1
done
say "coordinator ready"

start_agent() {
    local node="$1" labels="$2" metrics_port="$3"
    say "starting agent $node (labels $labels, metrics on 127.0.0.1:$metrics_port)"
    start "faultline-agent $node" "agent-$node" \
        "$bin_dir/faultline-agent" \
        --coordinator "$url" \
        --node-name "$node" \
        --labels "$labels" \
        --state-dir "$tmp/state-$node" \
        --metrics-listen "127.0.0.1:$metrics_port" \
        --certs-dir "$certs" \
        --telemetry-interval 1s
}

agents_started_ms=$(now_ms)
start_agent demo-a zone=a,role=web "$a_metrics_port"
start_agent demo-b zone=b,role=db "$b_metrics_port"

# Counts connected demo agents (and, with "telemetry", those that also sent telemetry) in
# `faultctl -o json agents list` read from stdin.
count_agents() {
    python3 -c '
import json, sys
want = sys.argv[1]
agents = json.load(sys.stdin)
print(sum(1 for a in agents
          if a["node_name"] in ("demo-a", "demo-b") and a["connected"]
          and (want != "telemetry" or a.get("telemetry"))))
' "$1"
}

say "waiting for both agents to connect (timeout ${connect_timeout_s} s)"
deadline=$((agents_started_ms + connect_timeout_s * 1000))
while :; do
    alive "faultline-agent demo-a"
    alive "faultline-agent demo-b"
    alive faultline-coordinator
    if json="$(faultctl --timeout 2s -o json agents list 2>"$tmp/faultctl.log")"; then
        connected="$(count_agents connected <<<"$json")"
        ((connected == 2)) && break
    fi
    if (($(now_ms) >= deadline)); then
        fail "agents not connected within ${connect_timeout_s} s; last faultctl error: $(cat "$tmp/faultctl.log")"
    fi
    sleep 0.1
done
elapsed_ms=$(($(now_ms) - agents_started_ms))
say "both agents connected ${elapsed_ms} ms after they were started"
if ((elapsed_ms > 5000)); then
    echo "warning: that is more than the 5 s target" >&2
fi

# Give the first telemetry a moment so the table shows CPU and memory (not required).
deadline=$(($(now_ms) + 3000))
while (($(now_ms) < deadline)); do
    json="$(faultctl -o json agents list 2>/dev/null)" || break
    (($(count_agents telemetry <<<"$json") == 2)) && break
    sleep 0.2
done

echo
say "faultctl agents list"
faultctl agents list
echo

show_metrics() {
    local name="$1" port="$2" body count
    body="$(curl -fsS "http://127.0.0.1:$port/metrics")" || fail "GET http://127.0.0.1:$port/metrics ($name) failed"
    count="$(grep -c '^faultline_' <<<"$body" || true)"
    ((count > 0)) || fail "$name /metrics has no faultline_ samples"
    say "$name /metrics (127.0.0.1:$port): $count faultline_ lines"
    grep -E '^faultline_(coordinator_agents_connected|agent_session_connected)( |\{)' <<<"$body" |
        sed 's/^/      /' || true
    if command -v promtool >/dev/null 2>&1; then
        promtool check metrics <<<"$body" >"$tmp/promtool.log" 2>&1 ||
            fail "promtool check metrics rejects the $name metrics: $(cat "$tmp/promtool.log")"
        say "  promtool check metrics: ok"
    fi
}
show_metrics coordinator "$coord_metrics_port"
show_metrics "agent demo-a" "$a_metrics_port"
show_metrics "agent demo-b" "$b_metrics_port"
echo

say "shutting down (SIGTERM: agents revert everything, then the coordinator)"
stop_all || fail "clean shutdown failed"
say "demo finished: two agents connected in ${elapsed_ms} ms, clean shutdown"
