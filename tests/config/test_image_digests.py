"""The rule for base-image digests: a digest is written only where it was read from the registry.

This project's machines reach no container registry, so nobody can verify a digest here; one
typed in by hand could name an image that does not exist (or another one). Digests therefore come
from Renovate (``docker:pinDigests``, which reads them from the registry) or from someone who
pulled the image; each sits beside its version tag (``name:version@sha256:…``) so Renovate can
check and move it, and docs/deployment.md names every image pinned by digest, so a new one does
not slip in unannounced. Everything else is pinned by exact version tag until Renovate pins it.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.config.conftest import ROOT

DIGEST = re.compile(r"(?P<image>[\w./-]+:(?P<tag>[\w.-]+))@sha256:(?P<hex>[0-9a-fA-F]*)")
FILES = [
    ROOT / "Dockerfile",
    *sorted(ROOT.glob("docker-compose*.yml")),
    *sorted((ROOT / ".github/workflows").glob("*.yml")),
    *sorted((ROOT / "deploy/k8s").rglob("*.yaml")),
]


def digests() -> dict[str, set[Path]]:
    found: dict[str, set[Path]] = {}
    for path in FILES:
        for match in DIGEST.finditer(path.read_text()):
            assert re.fullmatch(r"[0-9a-f]{64}", match["hex"]), f"{path}: {match[0]} is not a sha256 digest"
            where = f"{path}: {match['image']}"
            assert re.match(r"v?\d", match["tag"]), f"{where}: a digest needs its version tag"
            found.setdefault(match["image"], set()).add(path)
    return found


def test_every_digest_sits_beside_its_version_tag() -> None:
    digests()


def test_every_image_pinned_by_digest_is_named_in_the_supply_chain_docs() -> None:
    documented = (ROOT / "docs/deployment.md").read_text()
    for image, paths in digests().items():
        files = sorted(p.name for p in paths)
        assert f"`{image}`" in documented, f"{image} ({files}) is not in docs/deployment.md"


def test_one_image_has_one_digest_everywhere() -> None:
    seen: dict[str, set[str]] = {}
    for path in FILES:
        for match in DIGEST.finditer(path.read_text()):
            seen.setdefault(match["image"], set()).add(match["hex"])
    for image, hexes in seen.items():
        assert len(hexes) == 1, f"{image} is pinned to {len(hexes)} different digests"
