from __future__ import annotations

from pathlib import Path

import pytest

from tests.k8s.manifests import OVERLAYS, Obj, copy_with_example_secrets, render


@pytest.fixture(scope="session")
def k8s_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_with_example_secrets(tmp_path_factory.mktemp("k8s") / "k8s")


@pytest.fixture(scope="session")
def rendered(k8s_tree: Path) -> dict[str, list[Obj]]:
    return {overlay: render(k8s_tree, overlay) for overlay in OVERLAYS}
