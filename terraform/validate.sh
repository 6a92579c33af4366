#!/usr/bin/env bash
# Offline checks of the Terraform modules and examples (terraform/README.md):
#   terraform/validate.sh            terraform fmt -check -recursive, then checkov on every
#                                    module and example (skips are justified in place, with a
#                                    checkov:skip comment beside the resource);
#   terraform/validate.sh parse DIR  prints DIR's *.tf files as JSON, parsed with python-hcl2
#                                    (for modules whose providers cannot be downloaded here).
# checkov==3.3.30 (the version daemonset/validate.sh uses; it brings bc-python-hcl2) is
# installed with pip into target/terraform-venv on the first run (needs python3-venv and PyPI).
# `terraform validate` needs the providers: tests/tests/terraform.rs runs init, validate, plan
# and apply on the host module, which has none.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

venv="${FAULTLINE_TERRAFORM_VENV:-$root/target/terraform-venv}"
tool="checkov==3.3.30"

install_tools() {
  mkdir -p "$(dirname "$venv")"
  # One installer at a time (tests run in parallel); the others wait, then find it installed.
  exec 9>"$venv.lock"
  flock 9
  local shown
  if [ -x "$venv/bin/checkov" ] && shown="$("$venv/bin/pip" show checkov 2>/dev/null)" &&
    grep -qx "Version: ${tool##*==}" <<<"$shown"; then
    return 0
  fi
  echo "==> installing $tool into $venv" >&2
  if ! python3 -m venv "$venv"; then
    echo "error: python3 cannot create a virtualenv; install it with: apt-get install -y python3-venv" >&2
    exit 2
  fi
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "$tool"; then
    echo "error: could not install $tool from PyPI; run: $venv/bin/pip install $tool" >&2
    exit 2
  fi
}

install_tools

if [ "${1:-}" = parse ]; then
  exec "$venv/bin/python" "$root/terraform/tools/hcl2json.py" "${2:?parse needs a directory}"
fi

if ! command -v terraform >/dev/null 2>&1; then
  echo "error: terraform is not installed: put Terraform >= 1.9 on PATH (https://developer.hashicorp.com/terraform/install)" >&2
  exit 2
fi
echo "==> terraform fmt -check -recursive terraform"
TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive -diff terraform
for dir in terraform/modules/* terraform/examples/*; do
  echo "==> checkov --framework terraform -d $dir"
  "$venv/bin/checkov" --skip-download --quiet --compact --framework terraform -d "$dir"
done
echo "==> terraform modules valid"
