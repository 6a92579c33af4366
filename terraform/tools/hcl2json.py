"""Prints the Terraform files of a directory as JSON, parsed with python-hcl2 (the parser checkov
uses, bc-python-hcl2): {"main.tf": {...}, ...}. tests/tests/terraform/kubernetes.rs reads the
kubernetes module's chart values and variables from it; a file that does not parse fails here
with the file's name."""
import json
import pathlib
import sys

import hcl2

out = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.tf")):
    try:
        with open(path, encoding="utf-8") as f:
            out[path.name] = hcl2.load(f)
    except Exception as e:  # noqa: BLE001 - report which file failed, then fail
        sys.exit(f"error: {path} does not parse: {e}")
json.dump(out, sys.stdout, indent=1, default=str)
