"""The templates ConfigMaps, mounted as the kubelet mounts a ConfigMap (files are symlinks into a
timestamped folder; an edit swaps the `..data` link atomically), are a complete template set that
checks clean, and an edit of the ConfigMap is picked up by the renderer's reload."""

from __future__ import annotations

import os
from pathlib import Path

from notifier.templates import TemplateRenderer
from tests.k8s.manifests import Obj, find

FOLDERS = ("email", "sms", "push", "samples")


def mount(target: Path, data: dict[str, str], version: str) -> None:
    """Write ``data`` the way the kubelet updates a ConfigMap volume."""
    payload = target / f"..{version}"
    payload.mkdir(parents=True)
    for key, text in data.items():
        (payload / key).write_text(text)
    link = target / "..data_tmp"
    link.symlink_to(payload.name)
    os.replace(link, target / "..data")
    for key in data:
        if not (target / key).is_symlink():
            (target / key).symlink_to(f"..data/{key}")


def test_the_mounted_configmaps_are_a_clean_template_set_and_edits_reload(
    rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    objects = rendered["production"]
    folder = tmp_path / "templates"
    configmaps = {name: find(objects, "ConfigMap", f"templates-{name}")["data"] for name in FOLDERS}
    for name, data in configmaps.items():
        mount(folder / name, data, "2026_12_01_00_00_00.1")
    renderer = TemplateRenderer(folder)
    assert renderer.ok, [str(p) for p in renderer.problems]
    before = renderer.fingerprint

    edited = dict(configmaps["email"])
    edited["order.created.subject.txt"] = "Thanks! Order {{ order.id }} is in\n"
    mount(folder / "email", edited, "2026_12_01_00_05_00.2")
    result = renderer.reload()
    assert result.loaded, [str(p) for p in result.problems]
    assert renderer.fingerprint != before
