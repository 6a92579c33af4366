#!/usr/bin/env bash
# Offline validation of the plain Kubernetes manifests in daemonset/manifests/:
#   1. kubernetes-validate --strict: every built-in kind against the Kubernetes 1.30 schema (the
#      oldest release with securityContext.appArmorProfile, which the agent uses) and against
#      the newest one kubernetes-validate knows. CRD kinds (PodMonitor, ServiceMonitor,
#      PrometheusRule, cert-manager's) have no bundled schema: they are reported, not failed.
#   2. checkov --skip-download on the whole directory.
# Both tools are installed with pip into a virtualenv under target/ (first run only; needs
# python3 with the venv module and access to PyPI). tests/tests/manifests.rs runs this script;
# promtool and the dashboard checks live in that test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

venv="${FAULTLINE_VALIDATE_VENV:-$root/target/daemonset-venv}"
tools=("kubernetes-validate==1.37.0" "checkov==3.3.30")

need_install() {
  [ -x "$venv/bin/kubernetes-validate" ] && [ -x "$venv/bin/checkov" ] || return 0
  for t in "${tools[@]}"; do
    "$venv/bin/pip" show "${t%%==*}" 2>/dev/null | grep -qx "Version: ${t##*==}" || return 0
  done
  return 1
}

if need_install; then
  echo "==> installing ${tools[*]} into $venv"
  if ! python3 -m venv "$venv"; then
    echo "error: python3 cannot create a virtualenv; install it with: apt-get install -y python3-venv" >&2
    exit 2
  fi
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "${tools[@]}"; then
    echo "error: could not install ${tools[*]} from PyPI; run: $venv/bin/pip install ${tools[*]}" >&2
    exit 2
  fi
fi

manifests=(daemonset/manifests/*.yaml)
optional=(daemonset/manifests/monitoring/*.yaml daemonset/manifests/cert-manager/*.yaml)

for version in 1.30.0 1.37.0; do
  echo "==> kubernetes-validate --strict -k $version"
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}" "${optional[@]}"
done

# Skipped everywhere, with the reason:
#   CKV_K8S_43 (image by digest): the image is built and pushed by whoever installs Faultline
#     (see Dockerfile and docs/kubernetes.md); pin the digest you pushed when you apply.
# Findings specific to one workload are skipped on that workload with a checkov.io/skipN
# annotation that gives the reason (the agent's host namespaces, capabilities and uid 0; the
# coordinator's service account token).
echo "==> checkov --skip-download"
"$venv/bin/checkov" --skip-download --quiet --compact --framework kubernetes \
  --skip-check CKV_K8S_43 -d daemonset/manifests
echo "==> manifests valid"
