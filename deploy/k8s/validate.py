"""Validate rendered manifests offline: the built-in kinds against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: an unknown field fails), the operators' kinds against schemas/.

    kubectl kustomize deploy/k8s/overlays/production | python deploy/k8s/validate.py -
    python deploy/k8s/validate.py rendered.yaml [--kubernetes-version 1.30.0]

Used by scripts/deploy.sh k8s and tests/k8s; prints one line per problem, exits 1 if any.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSION = "1.30.0"


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        key = (schema["properties"]["apiVersion"]["const"], schema["properties"]["kind"]["const"])
        schemas[key] = schema
    return schemas


def problems(objects: list[dict[str, Any]], kubernetes_version: str = KUBERNETES_VERSION) -> list[str]:
    crds = crd_schemas()
    found = []
    for obj in objects:
        what = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
        crd = crds.get((obj.get("apiVersion", ""), obj.get("kind", "")))
        try:
            if crd is not None:
                jsonschema.validate(obj, crd)
            else:
                kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            found.append(f"{what}: no schema for {obj.get('apiVersion')} (add one to deploy/k8s/schemas)")
        except jsonschema.ValidationError as exc:
            found.append(f"{what}: {exc.message} at {'/'.join(str(p) for p in exc.absolute_path)}")
        except kubernetes_validate.ValidationError as exc:
            found.append(f"{what}: {exc.message} at {'/'.join(str(p) for p in exc.path)}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", help="rendered manifests, or - for standard input")
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    found = problems(objects, args.kubernetes_version)
    for line in found:
        print(line, file=sys.stderr)
    kinds = len({(o["apiVersion"], o["kind"]) for o in objects})
    print(
        f"{len(objects)} objects of {kinds} kinds: " + (f"{len(found)} problem(s)" if found else "all valid")
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
