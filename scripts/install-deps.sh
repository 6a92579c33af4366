#!/usr/bin/env bash
# Installs the Debian packages that Faultline's build, demo and tests need. Idempotent: packages
# already installed are skipped, and `apt-get update` runs only when a missing package has no
# install candidate yet. As root it installs; otherwise it fails with the list to install.
#
# Usage: scripts/install-deps.sh [build|demo|test|bench]   (default: test; each of build, demo,
# test includes the previous; bench is build plus what `make bench-agent` runs)
set -euo pipefail

profile="${1:-test}"

# Building: a C compiler for ring's assembly/C parts, TLS roots for cargo.
build_pkgs=(gcc libc6-dev ca-certificates clang llvm libbpf-dev)
# The demo: python3 (the demo service, load generator, free ports, JSON), curl, process tools,
# prometheus (scrapes and answers the error-rate guard), iproute2 (namespaces, veths, bridge),
# util-linux (nsenter).
demo_pkgs=(python3 curl procps prometheus iproute2 util-linux)
# The tests: promtool (from prometheus), ip/tc, and for the netem VM test (tests/vm/): qemu, a
# static busybox, depmod and cpio. On an image carrying a newer backported qemu-utils, installing
# Debian 12's qemu-system-x86 replaces it; Faultline does not use qemu-utils. curl and openssl
# fetch and check the pinned Helm build (scripts/fetch-helm.sh) for the chart tests; systemd
# (systemd-analyze, systemctl --root, systemd-sysusers) checks the bare-metal units offline.
# faketime (libfaketime) runs an agent with its clock 10 minutes off (tests/tests/clock_skew.rs).
# iptables makes the kube-proxy-like Service DNAT of agent/tests/net_session_dnat.rs.
test_pkgs=(prometheus iproute2 curl openssl systemd procps python3 python3-venv qemu-system-x86 busybox-static kmod cpio faketime iptables)
# tests/tests/terraform.rs: an sshd (in a network namespace) that terraform/modules/host installs
# the agent on over SSH; its client (ssh-keygen) comes with it.
test_pkgs+=(openssh-server)

# The dashboard's browser test (tests/tests/dashboard.rs): Debian's chromium, driven by
# playwright-core from npm (tests/dashboard/package-lock.json) on Node.js 20 or newer.
test_pkgs+=(chromium nodejs)

# dnsmasq is the real resolver the dns fault's tests query (agent/tests/net_dns_*.rs); it only
# runs by hand inside test network namespaces (the package's own service is not used).
test_pkgs+=(dnsmasq)

# `make bench-agent` (agent/src/bin/faultline-agent-bench): what the anchors exec (tc from
# iproute2 and nsenter from util-linux, iptables) and the data-path measurement (iperf3).
bench_pkgs=(iproute2 util-linux iptables iperf3)

case "$profile" in
build) wanted=("${build_pkgs[@]}") ;;
bench) wanted=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
demo) wanted=("${build_pkgs[@]}" "${demo_pkgs[@]}") ;;
test) wanted=("${build_pkgs[@]}" "${demo_pkgs[@]}" "${test_pkgs[@]}") ;;
*)
    echo "error: unknown profile '$profile': use build, demo, test or bench" >&2
    exit 2
    ;;
esac

# De-duplicate, keeping order.
declare -A seen=()
pkgs=()
for p in "${wanted[@]}"; do
    if [[ -z "${seen[$p]:-}" ]]; then
        seen[$p]=1
        pkgs+=("$p")
    fi
done

if ! command -v dpkg >/dev/null 2>&1; then
    # Not Debian: check for the commands instead and say what is missing.
    declare -A probe=(
        [gcc]=cc [libc6-dev]="" [ca-certificates]="" [python3]=python3 [curl]=curl [procps]=ps
        [prometheus]=prometheus [iproute2]=ip [clang]=clang [llvm]=llvm-strip [libbpf-dev]=""
        [util-linux]=nsenter [openssl]=openssl [systemd]=systemd-analyze [iptables]=iptables
        [iperf3]=iperf3
    )
    absent=()
    for p in "${pkgs[@]}"; do
        cmd="${probe[$p]:-}"
        if [[ -n "$cmd" ]] && ! command -v "$cmd" >/dev/null 2>&1; then
            absent+=("$p (command $cmd)")
        fi
    done
    if ((${#absent[@]})); then
        echo "error: this is not a Debian system (no dpkg); install the equivalents of:" >&2
        printf '  %s\n' "${absent[@]}" >&2
        exit 1
    fi
    echo "==> no dpkg here; the commands the $profile profile needs are present"
    exit 0
fi

# One query, no pipe: `dpkg -s | grep -q` under pipefail fails at random when grep exits on its
# first match and dpkg, still writing a long record, dies of SIGPIPE.
installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == "installed" ]]
}

missing=()
for p in "${pkgs[@]}"; do
    installed "$p" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
    echo "==> system packages for '$profile' already installed: ${pkgs[*]}"
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "error: missing Debian packages: ${missing[*]}" >&2
    echo "install them as root:  apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Update the package lists only when one of the missing packages has no candidate (fresh image
# with empty lists, or lists too old to know it).
needs_update=0
for p in "${missing[@]}"; do
    candidate="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
        needs_update=1
        break
    fi
done
if ((needs_update)); then
    echo "==> apt-get update"
    apt-get update -q
fi

echo "==> apt-get install ${missing[*]}"
if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    # Stale lists can point at files the mirror no longer has: refresh once and retry.
    echo "==> install failed; refreshing package lists and retrying"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

still=()
for p in "${missing[@]}"; do
    installed "$p" || still+=("$p")
done
if ((${#still[@]})); then
    echo "error: still not installed after apt-get: ${still[*]}" >&2
    exit 1
fi
echo "==> installed: ${missing[*]}"
