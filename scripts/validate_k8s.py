"""Validate rendered Kubernetes manifests offline, strictly (unknown fields fail).

Built-in kinds are checked against the schemas kubernetes-validate ships for a
pinned Kubernetes version; custom resources (ServiceMonitor) against the small
strict schemas committed in deploy/chart/tests/schemas. A kind with no schema
is an error, not a warning: it would otherwise pass unchecked.

    validate_k8s.py --kube-version 1.33 [--expect PATH=VALUE] [--absent KIND[/NAME]]
        [--binary bin/shardstream] FILE|-
    validate_k8s.py --kube-version 1.33 --expect-invalid FILE...

--expect checks a rendered value (KIND/NAME:dotted.path, list items by
index; a list passes when one of its items is VALUE), --absent that no object
of a kind (or no KIND/NAME) was rendered, --binary that every container
running shardstream names a subcommand and flags that binary has
(`shardstream help ROLE`). --expect-invalid proves the validation bites: each
file must fail, with the text of its "# expect:" line in the error.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

CRD_SCHEMAS = Path(__file__).resolve().parent.parent / "deploy/chart/tests/schemas"


def crd_schema(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The committed schema for a custom resource, e.g.
    servicemonitor-monitoring-v1.json for monitoring.coreos.com/v1."""
    group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
    path = CRD_SCHEMAS / f"{str(doc.get('kind', '')).lower()}-{group.split('.')[0]}-{version}.json"
    if not group or not path.exists():
        return None
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def validate(doc: dict[str, Any], kube_version: str) -> str | None:
    """The first error in doc, naming the object and the field, or None."""
    schema = crd_schema(doc)
    try:
        if schema is not None:
            jsonschema.Draft202012Validator(schema).validate(doc)
        else:
            kubernetes_validate.validate(doc, kube_version, strict=True)
    except jsonschema.ValidationError as e:
        where = ".".join(str(p) for p in e.absolute_path) or "(top)"
        return f"{name_of(doc)}: {where}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError:
        return (
            f"{name_of(doc)}: no schema for {doc.get('apiVersion')} {doc.get('kind')} in "
            f"Kubernetes {kube_version} nor in {CRD_SCHEMAS}"
        )
    return None


def load(path: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def lookup(docs: list[dict[str, Any]], ref: str) -> Any:
    """The value at KIND/NAME:dotted.path; KeyError naming what is missing."""
    obj, _, path = ref.partition(":")
    found = [d for d in docs if name_of(d) == obj]
    if not found:
        raise KeyError(f"no {obj} rendered")
    value: Any = found[0]
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(f"{obj} has no {path} (stopped at {part})")
    return value


def flag_errors(docs: list[dict[str, Any]], binary: str) -> list[str]:
    """Subcommands and flags the rendered containers pass that binary lacks."""
    errors = []
    for d in docs:
        spec = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
        for c in spec.get("containers", []):
            args = [str(a) for a in c.get("args", [])]
            if not args:
                continue
            help_ = subprocess.run(
                [binary, "help", args[0]], capture_output=True, text=True, check=False
            )
            if help_.returncode != 0:
                errors.append(f"{name_of(d)}: {binary} has no subcommand {args[0]!r}")
                continue
            known = set(re.findall(r"^  -([a-z0-9-]+)", help_.stdout + help_.stderr, re.M))
            errors += [
                f"{name_of(d)}: {binary} {args[0]} has no flag {a.split('=')[0]}"
                for a in args[1:]
                if a.startswith("--") and a[2:].split("=")[0] not in known
            ]
    return errors


def check_rendered(
    docs: list[dict[str, Any]],
    kube_version: str,
    expects: list[str],
    absents: list[str],
    binary: str | None,
) -> list[str]:
    errors = [e for d in docs if (e := validate(d, kube_version)) is not None]
    if binary:
        errors += flag_errors(docs, binary)
    for exp in expects:
        ref, _, want = exp.partition("=")
        try:
            got = lookup(docs, ref)
        except KeyError as e:
            errors.append(f"expected {exp}: {e.args[0]}")
            continue
        if str(got) != want and not (isinstance(got, list) and want in map(str, got)):
            errors.append(f"expected {exp}, got {got!r}")
    errors += [
        f"expected no {kind}, rendered {name_of(d)}"
        for kind in absents
        for d in docs
        if kind in (d.get("kind"), name_of(d))
    ]
    return errors


def check_invalid(paths: list[str], kube_version: str, binary: str | None) -> list[str]:
    """Each file must fail validation with its "# expect:" text in the error."""
    errors = []
    for path in paths:
        marks = [
            line.split(":", 1)[1].strip()
            for line in Path(path).read_text().splitlines()
            if line.startswith("# expect:")
        ]
        if not marks:
            errors.append(f"{path}: no '# expect: TEXT' line")
            continue
        docs = load(path)
        got = [e for d in docs if (e := validate(d, kube_version)) is not None]
        if binary:
            got += flag_errors(docs, binary)
        if not any(marks[0] in e for e in got):
            errors.append(f"{path}: want an error containing {marks[0]!r}, got {got}")
        else:
            print(f"{path}: refused as it should be: {got[0]}")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kube-version", required=True, help="e.g. 1.33")
    ap.add_argument("--expect", action="append", default=[], metavar="KIND/NAME:PATH=VALUE")
    ap.add_argument("--absent", action="append", default=[], metavar="KIND[/NAME]")
    ap.add_argument("--binary", help="check containers' subcommands and flags against it")
    ap.add_argument("--expect-invalid", action="store_true", help="every file must fail")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    if args.expect_invalid:
        errors = check_invalid(args.files, args.kube_version, args.binary)
    else:
        docs = [d for f in args.files for d in load(f)]
        errors = check_rendered(docs, args.kube_version, args.expect, args.absent, args.binary)
        if not errors:
            names = ", ".join(sorted(name_of(d) for d in docs))
            print(f"{len(docs)} objects valid in Kubernetes {args.kube_version}: {names}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
