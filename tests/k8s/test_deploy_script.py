"""`./scripts/deploy.sh k8s OVERLAY VERSION` without a cluster: renders the release, validates it,
says that nothing was applied; refuses to go on without the secret files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from tests.k8s.manifests import ROOT, copy_with_example_secrets


def deploy(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "K8S_DIR": str(tree), "KUBECONFIG": str(tree / "no-such-kubeconfig")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [str(ROOT / "scripts/deploy.sh"), "k8s", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_without_a_cluster_it_renders_and_validates_the_release(tmp_path: Path) -> None:
    tree = copy_with_example_secrets(tmp_path / "k8s")
    result = deploy(tree, "staging", "v1.2.3")
    assert result.returncode == 0, result.stderr
    assert "all valid" in result.stdout
    assert "no Kubernetes cluster reachable" in result.stderr
    assert "nothing applied" in result.stderr
    rendered = [d for d in yaml.safe_load_all((tree / ".build/staging/rendered.yaml").read_text()) if d]
    images = {
        c["image"]
        for d in rendered
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        + d["spec"]["template"]["spec"].get("initContainers", [])
    }
    assert "microservices-app:v1.2.3" in images
    assert not any(i.startswith("microservices-app:") and i != "microservices-app:v1.2.3" for i in images)


def test_it_refuses_without_the_secret_files(tmp_path: Path) -> None:
    tree = copy_with_example_secrets(tmp_path / "k8s")
    (tree / "overlays/production/secrets/redis.env").unlink()
    result = deploy(tree, "production", "v1")
    assert result.returncode != 0
    assert "overlays/production/secrets/redis.env" in result.stderr
    assert not (tree / ".build/production/rendered.yaml").exists()


def test_it_needs_an_overlay_and_a_version(tmp_path: Path) -> None:
    tree = copy_with_example_secrets(tmp_path / "k8s")
    for args in (("prod", "v1"), ("dev",)):
        result = deploy(tree, *args)
        assert result.returncode != 0
        assert "usage:" in result.stderr
