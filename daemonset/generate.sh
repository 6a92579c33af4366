#!/usr/bin/env bash
# Renders the plain manifests in daemonset/manifests/ from the Helm chart daemonset/chart/faultline,
# so there is one source for both installs:
#   helm template faultline chart/faultline --namespace faultline  (namespace.create=true and every
#     monitoring object on) -> manifests/<template path>, e.g. templates/30-coordinator.yaml ->
#     manifests/30-coordinator.yaml, templates/monitoring/*.yaml -> manifests/monitoring/
#   the same with tls.source=certManager, only
#     templates/cert-manager/certificates.yaml -> manifests/cert-manager/certificates.yaml
#
# Usage: daemonset/generate.sh [OUT_DIR]   (default: daemonset/manifests)
# Run it after editing the chart; tests/tests/manifests.rs renders into a temporary directory
# and fails while the result differs from daemonset/manifests/. Helm comes from
# scripts/fetch-helm.sh (pinned, downloaded into target/tools on first use).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${1:-$here/manifests}"
chart="$here/chart/faultline"

helm="$("$root/scripts/fetch-helm.sh")"
# Keep Helm's cache and config out of $HOME.
export HELM_CACHE_HOME="$root/target/tools/helm-home/cache"
export HELM_CONFIG_HOME="$root/target/tools/helm-home/config"
export HELM_DATA_HOME="$root/target/tools/helm-home/data"

# Splits `helm template` output on its "# Source: faultline/templates/<path>" markers into
# $out/<path>, documents in Helm's order, each file headed by where it comes from.
read -r -d '' splitter <<'PY' || true
import os, re, sys
out = sys.argv[1]
docs = {}
order = []
for doc in re.split(r"(?m)^---\n", sys.stdin.read()):
    m = re.match(r"# Source: faultline/templates/(\S+)\n", doc)
    if not m:
        if doc.strip():
            sys.exit("generate.sh: a rendered document has no '# Source:' line:\n" + doc[:200])
        continue
    path = m.group(1)
    if path not in docs:
        docs[path] = []
        order.append(path)
    docs[path].append(doc[m.end():].rstrip("\n") + "\n")
for path in order:
    dest = os.path.join(out, path)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "w") as f:
        f.write("# Generated from daemonset/chart/faultline/templates/%s by daemonset/generate.sh;\n"
                "# edit the chart, not this file.\n" % path)
        f.write("---\n".join(docs[path]))
    print("wrote", os.path.relpath(dest))
PY
split() { python3 -c "$splitter" "$out"; }

mkdir -p "$out"
"$helm" template faultline "$chart" --namespace faultline \
  --set namespace.create=true \
  --set monitoring.podMonitor.enabled=true,monitoring.serviceMonitor.enabled=true \
  --set monitoring.prometheusRule.enabled=true,monitoring.grafanaDashboard.enabled=true | split
"$helm" template faultline "$chart" --namespace faultline \
  --set tls.source=certManager \
  --show-only templates/cert-manager/certificates.yaml | split
