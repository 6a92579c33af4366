#!/usr/bin/env bash
# `make demo` (as root, on this one machine, in well under 2 minutes):
#   dev certificates; the coordinator on the host (10.77.0.1); three agents, each in its own
#   network namespace acting as a node (fl-demo-1..3 at 10.77.0.11..13, veth pairs on the host
#   bridge fl-demo-br0); a small HTTP service on fl-demo-1 and a load generator on the host that
#   counts errors and timeouts; Prometheus (Debian's package) scraping the load generator, the
#   agents and the coordinator every second; then `faultctl apply` of an experiment that drops
#   half the packets to the service and stresses CPU on two of the nodes, with an error-rate guard that breaches;
#   `faultctl watch` shows the live progress, the abort and the steady-state recovery watch; the
#   abort latency, the final report and, last, the report's findings are printed.
# Everything is removed on exit, on failure and on Ctrl-C: each process by PID, the network
# namespaces, the veth pairs and the bridge, and the temporary directory.
#
# Environment:
#   FAULTLINE_BIN_DIR     where the binaries are (default: target/debug)
#   FAULTLINE_DEMO_KEEP=1 keep the temporary directory (logs) instead of removing it
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
# Only the flags below configure the processes: drop FAULTLINE_* settings from the caller's shell
# (the daemons read them as flag defaults), keeping this script's own two.
while read -r var; do
    case "$var" in
    FAULTLINE_BIN_DIR | FAULTLINE_DEMO_KEEP) ;;
    FAULTLINE_* | NODE_NAME) unset "$var" ;;
    esac
done < <(compgen -e)
bin_dir="${FAULTLINE_BIN_DIR:-$repo/target/debug}"
demo_started_s=$SECONDS

nodes=(fl-demo-1 fl-demo-2 fl-demo-3)
bridge=fl-demo-br0
host_ip=10.77.0.1
node_ip() { echo "10.77.0.1${1#fl-demo-}"; }  # fl-demo-2 -> 10.77.0.12
service_node=fl-demo-1
service_addr="$(node_ip "$service_node"):8080"
experiment=demo-checkout-stall
stop_timeout_s=10

say() { printf '==> %s\n' "$*"; }
fail() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

[[ "$(id -u)" -eq 0 ]] || fail "make demo needs root (it creates network namespaces, veth pairs and a bridge); run it as root"
for b in faultctl faultline-coordinator faultline-agent; do
    [[ -x "$bin_dir/$b" ]] || fail "missing $bin_dir/$b: build with 'cargo build --workspace --bins' (make demo does)"
done
python=/usr/bin/python3
[[ -x "$python" ]] || python="$(command -v python3 || true)"
[[ -n "$python" ]] || fail "python3 is not installed: run scripts/install-deps.sh demo"
for c in ip nsenter prometheus curl; do
    command -v "$c" >/dev/null 2>&1 || fail "$c is not installed: run scripts/install-deps.sh demo (as root)"
done

# ---------------------------------------------------------------------------------------------
# Clean-up: processes by PID (newest first), then namespaces, veths, bridge, temp dir.
# ---------------------------------------------------------------------------------------------
tmp="$(mktemp -d -t faultline-demo.XXXXXX)"
pids=()  # in start order
names=() # same order as pids
declare -A stopped=()

stop_all() {
    local rc=0 i pid name status waited
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid="${pids[$i]}"
        name="${names[$i]}"
        [[ -n "${stopped[$pid]:-}" ]] && continue
        stopped[$pid]=1
        if kill -0 "$pid" 2>/dev/null; then
            # A paused (SIGSTOP) process only acts on SIGTERM once it runs again.
            kill -CONT "$pid" 2>/dev/null || true
            kill -TERM "$pid" 2>/dev/null || true
            waited=0
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
        # 0: a clean exit; 143: our SIGTERM (the Python helpers); 130: a Ctrl-C reached it too.
        if ((status == 0 || status == 143 || status == 130)); then
            say "stopped $name (pid $pid)"
        else
            echo "error: $name (pid $pid) exited with status $status" >&2
            rc=1
        fi
    done
    return "$rc"
}

# Worker and guard processes of this demo's faults that outlived the agents (there should be
# none: workers die with their agent, guards resume their processes and exit). They carry the
# fault id, which starts with the experiment's name, in their argv.
leftover_workers() {
    local p cmd
    for p in /proc/[0-9]*; do
        cmd="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline" || true)"
        if [[ "$cmd" == "$bin_dir/faultline-agent __"* && "$cmd" == *"--fault-id $experiment-"* ]]; then
            echo "${p#/proc/}"
        fi
    done
    return 0
}

remove_network() {
    local ns
    for ns in "${nodes[@]}"; do
        # Deleting the namespace also deletes its end of the veth pair, and with it the pair.
        if [[ -e "/run/netns/$ns" ]]; then
            ip netns del "$ns" 2>/dev/null || true
        fi
        ip link del "fl-demo-h${ns#fl-demo-}" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
}

show_logs() {
    local log
    for log in "$tmp"/*.log; do
        [[ -f "$log" && "$log" != */certs-init.log ]] || continue
        echo "----- last 20 lines of $(basename "$log") -----" >&2
        tail -n 20 "$log" >&2 || true
    done
}

on_exit() {
    local rc=$? left
    # Finish the clean-up even if Ctrl-C is pressed again.
    trap '' INT TERM
    trap - EXIT
    echo
    say "cleaning up"
    if ! stop_all && ((rc != 130 && rc != 143)); then
        rc=1
    fi
    # Give exiting workers and guards a moment (they go when their agent's pipe closes).
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        left="$(leftover_workers)"
        [[ -z "$left" ]] && break
        sleep 0.2
    done
    if [[ -n "$left" ]]; then
        echo "error: agent worker/guard processes left behind: $left; killing them by PID" >&2
        # shellcheck disable=SC2086
        kill -CONT $left 2>/dev/null || true
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
        rc=1
    fi
    remove_network
    if ((rc != 0 && rc != 130 && rc != 143)); then
        echo "error: demo failed (exit $rc); the end of each process's log follows" >&2
        show_logs
    fi
    if [[ "${FAULTLINE_DEMO_KEEP:-0}" == 1 ]]; then
        say "kept $tmp (FAULTLINE_DEMO_KEEP=1)"
    else
        rm -rf "$tmp"
    fi
    say "removed the namespaces ${nodes[*]}, their veth pairs and $bridge"
    exit "$rc"
}
trap on_exit EXIT
trap 'echo; echo "interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

# Runs "$@" in the background with its output in $tmp/<log>.log and remembers its PID.
# (`in_node NS cmd` execs cmd, so the PID is the command's own.)
start() {
    local name="$1" log="$2"
    shift 2
    "$@" >"$tmp/$log.log" 2>&1 &
    pids+=("$!")
    names+=("$name")
}

# Fails (with the log tail) if the process started as $1 has exited.
alive() {
    local i
    for i in "${!names[@]}"; do
        if [[ "${names[$i]}" == "$1" ]] && ! kill -0 "${pids[$i]}" 2>/dev/null; then
            fail "$1 exited early"
        fi
    done
}

now_ms() { date +%s%3N; }

# in_node NS CMD...: runs CMD in the node's network namespace only (nsenter execs CMD). Unlike
# `ip netns exec`, it leaves the mount namespace alone, so /sys/fs/cgroup stays visible to the
# agent; processes and files are shared with the host, as on one machine they must be.
in_node() {
    local ns="$1"
    shift
    exec nsenter --net="/run/netns/$ns" -- "$@"
}

# wait_until SECONDS WHAT PROCESS-NAME COMMAND...: polls COMMAND every 0.2 s.
wait_until() {
    local secs="$1" what="$2" proc="$3" deadline
    shift 3
    deadline=$(($(now_ms) + secs * 1000))
    until "$@" >/dev/null 2>&1; do
        [[ -z "$proc" ]] || alive "$proc"
        (($(now_ms) < deadline)) || fail "$what: not within ${secs} s"
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------------
# 1. Network: a bridge on the host (10.77.0.1) and one namespace per node.
# ---------------------------------------------------------------------------------------------
stale=0
for ns in "${nodes[@]}"; do
    if [[ -e "/run/netns/$ns" ]]; then stale=1; fi
done
if ip link show "$bridge" >/dev/null 2>&1; then stale=1; fi
if ((stale)); then
    say "removing leftovers of an earlier demo that was killed (namespaces ${nodes[*]}, $bridge)"
    remove_network
fi

say "working in $tmp"
say "network: bridge $bridge ($host_ip/24) and namespaces ${nodes[*]}"
{
    ip link add "$bridge" type bridge
    ip addr add "$host_ip/24" dev "$bridge"
    ip link set "$bridge" up
    for ns in "${nodes[@]}"; do
        n="${ns#fl-demo-}"
        ip netns add "$ns"
        ip link add "fl-demo-h$n" type veth peer name eth0 netns "$ns"
        ip link set "fl-demo-h$n" master "$bridge" up
        ip -n "$ns" addr add "$(node_ip "$ns")/24" dev eth0
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
        # Like a real node: a default route (via the host), which is where network faults act
        # when the experiment names no interface.
        ip -n "$ns" route add default via "$host_ip" dev eth0
    done
} >"$tmp/network.log" 2>&1 || fail "setting up the network failed: $(tail -n 5 "$tmp/network.log")"
for ns in "${nodes[@]}"; do
    say "  $ns: $(node_ip "$ns") (veth fl-demo-h${ns#fl-demo-} on $bridge)"
done

# Free ports: gRPC on the bridge address, the rest on loopback.
read -r grpc_port coord_metrics_port prom_port loadgen_port < <(
    "$python" -c '
import socket, sys
socks = []
for host in (sys.argv[1], "127.0.0.1", "127.0.0.1", "127.0.0.1"):
    s = socket.socket()
    s.bind((host, 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$host_ip"
) || true
[[ -n "${loadgen_port:-}" ]] || fail "could not pick free ports with python3"
url="https://$host_ip:$grpc_port"
certs="$tmp/certs"
prom_url="http://127.0.0.1:$prom_port"
faultctl() { "$bin_dir/faultctl" --coordinator "$url" --certs-dir "$certs" "$@"; }

# ---------------------------------------------------------------------------------------------
# 2. Certificates, coordinator, agents.
# ---------------------------------------------------------------------------------------------
say "certificates: faultctl certs init --agents $(
    IFS=,
    echo "${nodes[*]}"
) --san $host_ip"
faultctl certs init --dir "$certs" --agents "$(
    IFS=,
    echo "${nodes[*]}"
)" --san "$host_ip" >"$tmp/certs-init.log" 2>&1 ||
    fail "faultctl certs init failed: $(cat "$tmp/certs-init.log")"

cat >"$tmp/coordinator.toml" <<'EOF'
# The demo puts 2 of its 3 nodes under fault: allow 70% of the fleet (the default is 50%).
[policy]
max_fleet_percent_under_fault = 70
max_concurrent_experiments = 2
max_duration = "10m"
EOF
say "coordinator on $host_ip:$grpc_port (metrics 127.0.0.1:$coord_metrics_port)"
start faultline-coordinator coordinator \
    "$bin_dir/faultline-coordinator" \
    --listen "$host_ip:$grpc_port" \
    --metrics-listen "127.0.0.1:$coord_metrics_port" \
    --data-dir "$tmp/coordinator-data" \
    --certs-dir "$certs" \
    --config "$tmp/coordinator.toml" \
    --lease 5s
wait_until 15 "coordinator ready (GET /readyz)" faultline-coordinator \
    curl -fsS -o /dev/null "http://127.0.0.1:$coord_metrics_port/readyz"

agents_started_ms=$(now_ms)
for ns in "${nodes[@]}"; do
    say "agent $ns in namespace $ns (metrics $(node_ip "$ns"):9465)"
    start "agent $ns" "agent-$ns" \
        in_node "$ns" "$bin_dir/faultline-agent" \
        --coordinator "$url" \
        --node-name "$ns" \
        --labels "demo=true,zone=z${ns#fl-demo-}" \
        --state-dir "$tmp/state-$ns" \
        --metrics-listen "$(node_ip "$ns"):9465" \
        --certs-dir "$certs" \
        --telemetry-interval 1s
done
connected_count() {
    faultctl --identity viewer --timeout 2s -o json agents list 2>>"$tmp/faultctl.log" |
        "$python" -c '
import json, sys
print(sum(1 for a in json.load(sys.stdin) if a["node_name"].startswith("fl-demo-") and a["connected"]))'
}
deadline=$(($(now_ms) + 30000))
until [[ "$(connected_count || echo 0)" == 3 ]]; do
    for ns in "${nodes[@]}"; do alive "agent $ns"; done
    alive faultline-coordinator
    (($(now_ms) < deadline)) || fail "the 3 agents did not connect within 30 s; last faultctl error: $(tail -n 1 "$tmp/faultctl.log" 2>/dev/null)"
    sleep 0.2
done
say "3 agents connected $(($(now_ms) - agents_started_ms)) ms after they started"

# ---------------------------------------------------------------------------------------------
# 3. The service, the load generator, Prometheus.
# ---------------------------------------------------------------------------------------------
say "HTTP service fl_demo_service on $service_node ($service_addr)"
start "service on $service_node" service \
    in_node "$service_node" "$python" "$repo/scripts/demo/fl_demo_service.py" --listen "$service_addr"
wait_until 10 "the service answering on $service_addr" "service on $service_node" \
    curl -fsS --max-time 1 -o /dev/null "http://$service_addr/"

say "load generator: 20 req/s to http://$service_addr/, timeout 0.5 s (metrics 127.0.0.1:$loadgen_port)"
start "load generator" loadgen \
    "$python" "$repo/scripts/demo/fl_demo_loadgen.py" --target "http://$service_addr/" \
    --rate 20 --timeout 0.5 --metrics "127.0.0.1:$loadgen_port"
wait_until 10 "load generator metrics" "load generator" \
    curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$loadgen_port/metrics"

agent_targets="$(for ns in "${nodes[@]}"; do printf "'%s:9465'," "$(node_ip "$ns")"; done)"
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: demo-loadgen
    static_configs: [{targets: ['127.0.0.1:$loadgen_port']}]
  - job_name: faultline-agents
    static_configs: [{targets: [${agent_targets%,}]}]
  - job_name: faultline-coordinator
    static_configs: [{targets: ['127.0.0.1:$coord_metrics_port']}]
EOF
say "prometheus on $prom_url (scrapes every 1 s: load generator, 3 agents, coordinator)"
start prometheus prometheus \
    prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prometheus-data" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn
# query EXPR -> the first value of an instant query, or nothing.
query() {
    curl -fsS --max-time 2 --get "$prom_url/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
        "$python" -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
if r:
    print(r[0]["value"][1])'
}
guard_query='sum(rate(demo_requests_total{outcome!="ok"}[5s])) / sum(rate(demo_requests_total[5s]))'
has_value() { [[ -n "$(query "$1")" ]]; }
wait_until 40 "Prometheus computing the error ratio (first scrapes take a few seconds)" prometheus \
    has_value "$guard_query"
agents_scraped() { [[ "$(query 'sum(up{job="faultline-agents"})')" == 3 ]]; }
wait_until 15 "Prometheus scraping all 3 agents" prometheus agents_scraped
# A full 5 s rate window of steady load before the experiment (a soft wait: at most 8 s).
steady() { "$python" -c 'import sys; sys.exit(0 if float(sys.argv[1] or 0) >= 15 else 1)' "$(query 'sum(rate(demo_requests_total[5s]))')"; }
deadline=$(($(now_ms) + 8000))
until steady 2>/dev/null || (($(now_ms) >= deadline)); do sleep 0.5; done
say "baseline: $(query 'sum(rate(demo_requests_total[5s]))' | cut -c1-5) req/s, error ratio $(query "$guard_query" | cut -c1-6)"

# ---------------------------------------------------------------------------------------------
# 4. The experiment.
# ---------------------------------------------------------------------------------------------
sed -e "s|@PROMETHEUS_URL@|$prom_url|" -e "s|@SERVICE_URL@|http://$service_addr/|" \
    scripts/demo/demo-experiment.yaml >"$tmp/demo-experiment.yaml"
echo
say "faultctl apply -f demo-experiment.yaml --dry-run"
faultctl --identity operator apply -f "$tmp/demo-experiment.yaml" --dry-run ||
    fail "the dry run was refused (see above)"
selected="$(faultctl --identity operator -o json apply -f "$tmp/demo-experiment.yaml" --dry-run |
    "$python" -c 'import json, sys; print(" ".join(s["agent"] for s in json.load(sys.stdin)["plan"]["selected"]))')" ||
    fail "the JSON dry run failed"
if [[ " $selected " != *" $service_node "* ]]; then
    echo "note: the plan does not select $service_node, the service's node: the drop fault will not reach the service and the guard will not breach" >&2
fi
echo
say "faultctl apply -f demo-experiment.yaml"
faultctl --identity operator apply -f "$tmp/demo-experiment.yaml" || fail "faultctl apply failed (see above)"
echo
say "faultctl watch $experiment"
watch_rc=0
faultctl --identity viewer watch "$experiment" || watch_rc=$?
echo
case "$watch_rc" in
3) ;;
0) fail "the experiment completed: the error-rate guard never breached (is the drop fault working? see the agent logs)" ;;
4)
    faultctl --identity viewer describe experiment "$experiment" || true
    fail "the experiment failed (details above)"
    ;;
*) fail "faultctl watch failed (exit $watch_rc)" ;;
esac

# Who aborted it, and the abort latency: from the report's JSON record (its abort section), else
# from the experiment's guard timeline and revert times.
faultctl --identity viewer report "$experiment" --format json >"$tmp/report.json" ||
    fail "faultctl report --format json failed"
faultctl --identity viewer -o json describe experiment "$experiment" >"$tmp/experiment.json" ||
    fail "faultctl describe experiment failed"
latency="$("$python" - "$tmp/report.json" "$tmp/experiment.json" <<'EOF'
import datetime, json, sys

def clock(ms):
    t = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return t.strftime("%H:%M:%S.%f")[:-3]

report = json.load(open(sys.argv[1]))
e = json.load(open(sys.argv[2]))
abort = report.get("abort") or e.get("abort") or {}
trigger = abort.get("trigger", "")
if trigger and trigger != "guard":
    print(f'NOT-GUARD aborted by {trigger} ({abort.get("reason", "")}), not by the guard')
    sys.exit(0)
if abort.get("last_revert_ack_unix_ms", 0) > 0:
    t0 = abort["triggered_unix_ms"]
    print(f'{abort["latency_ms"]} ms (from the report: guard {abort.get("guard", "?")} breached '
          f'at {clock(t0)} with {abort.get("observed_value", 0):.3f}, RevertFault sent '
          f'+{abort["sent_unix_ms"] - t0} ms, last revert acknowledged '
          f'+{abort["last_revert_ack_unix_ms"] - t0} ms)')
    sys.exit(0)
breach = min((s["at_unix_ms"] for s in e["guard_timeline"] if s["breached"]), default=None)
last = max((t["reverted_unix_ms"] for t in e["targets"]), default=0)
if breach and last:
    print(f"{last - breach} ms (first breached guard sample -> last revert acknowledged)")
else:
    print("unknown (the report records no completed abort)")
EOF
)"
[[ "$latency" != NOT-GUARD* ]] || fail "the experiment was ${latency#NOT-GUARD }"
say "the error-rate guard aborted the experiment"
say "abort latency (guard breach -> last target's revert acknowledged): $latency"

wait_until 5 "the service answering again after the abort" "service on $service_node" \
    curl -fsS --max-time 1 -o /dev/null "http://$service_addr/"
say "the service answers again; load generator: $(curl -fsS "http://127.0.0.1:$loadgen_port/metrics" | grep '^demo_requests_total' | sed 's/demo_requests_total//' | tr '\n' ' ')"

echo
say "faultctl report $experiment (Markdown)"
faultctl --identity viewer report "$experiment" || fail "faultctl report failed"
echo
say "demo finished in $((SECONDS - demo_started_s)) s"
# Last: the report's findings (rule-based sentences written from the guard and check values).
faultctl --identity viewer report "$experiment" --format json >"$tmp/report.json" ||
    fail "faultctl report --format json failed"
say "findings of $experiment (faultctl report $experiment):"
"$python" - "$tmp/report.json" <<'EOF'
import json, sys
for f in json.load(open(sys.argv[1])).get("findings", []):
    print(f"  - {f}")
EOF
