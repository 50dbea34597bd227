"""The supply chain: the hashed lock files and their refresh, what installs from them, Renovate,
images and actions pinned, the SBOM build.sh writes, and the server versions the tests run on
being the ones compose and CI run."""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pika
import pytest
import redis
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.config.conftest import ROOT, require_tool
from tests.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER, TEST_REDIS_DB

LOCKS = {name: ROOT / "requirements" / f"{name}.txt" for name in ("runtime", "dev")}
# The server series the tests run on; compose and CI must run the same (README, docs/deployment.md).
SERVER_SERIES = {"postgres": "15", "redis": "7.0", "rabbitmq": "3.10"}
# How many version components make a series: PostgreSQL counts majors, Redis and RabbitMQ minors.
SERIES_PARTS = {"postgres": 1, "redis": 2, "rabbitmq": 2}
DIGEST = r"@sha256:[0-9a-f]{64}"


def pins(lock: Path) -> dict[str, str]:
    """name -> version of every requirement in a lock file, checking each carries hashes."""
    text = lock.read_text()
    result = {}
    # A requirement is its first line plus the continuation lines (hashes) that follow it.
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):
        first = block.splitlines()[0]
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?: ;.*)? \\$", first)
        assert match, f"{lock.name}: not an exact pin with hashes: {first!r}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), f"{lock.name}: {first} has no hash"
        result[canonicalize_name(match.group(1))] = match.group(2)
    return result


def setup_requirements(*sections: tuple[str, str]) -> list[Requirement]:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    lines = [line.split("#", 1)[0].strip() for s, k in sections for line in setup[s][k].splitlines()]
    return [Requirement(line) for line in lines if line]


def series(image: str, name: str) -> str:
    tag = image.split("@", 1)[0].rsplit(":", 1)[1]
    version = re.match(r"^(\d+(?:\.\d+)*)", tag)
    assert version, f"{image}: the tag names no version"
    return ".".join(version.group(1).split(".")[: SERIES_PARTS[name]])


def compose_images() -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {name: service["image"] for name, service in compose["services"].items() if "image" in service}


def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    return loaded


# --- the lock -----------------------------------------------------------------------------------


def test_every_locked_requirement_is_an_exact_pin_with_hashes() -> None:
    for lock in LOCKS.values():
        assert len(pins(lock)) > 10, lock


def test_the_dev_lock_has_the_runtime_lock_at_the_same_versions() -> None:
    runtime, dev = pins(LOCKS["runtime"]), pins(LOCKS["dev"])
    differ = {name: (version, dev.get(name)) for name, version in runtime.items() if dev.get(name) != version}
    assert not differ, f"runtime and dev locks disagree: {differ}"


def test_the_runtime_lock_holds_setup_cfgs_requirements_and_not_the_dev_extra() -> None:
    runtime = pins(LOCKS["runtime"])
    for requirement in setup_requirements(("options", "install_requires")):
        version = runtime.get(canonicalize_name(requirement.name))
        assert version, f"{requirement.name} is not in requirements/runtime.txt: run scripts/lock.sh"
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement} vs {version}"
    for name in ("pytest", "mypy", "ruff"):
        assert name not in runtime, f"{name} (dev only) is in the image's lock"


def test_lock_covers_answers_offline() -> None:
    result = subprocess.run(
        ["bash", "scripts/lock.sh", "--covers"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"the lock is behind setup.cfg, run scripts/lock.sh: {result.stderr}"


def test_the_lock_is_current_with_setup_cfg() -> None:
    """What CI checks: compiling again from the committed pins gives the committed files (needs PyPI)."""
    result = subprocess.run(
        ["bash", "scripts/lock.sh", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """What lock.sh reads, in a folder of its own: the checks below may edit setup.cfg there."""
    for name in (
        "setup.cfg",
        "pyproject.toml",
        "README.md",
        "requirements",
        "scripts/lock.sh",
        "scripts/lib.sh",
    ):
        source, target = ROOT / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    return tmp_path


def run_lock(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The copy uses this checkout's virtualenv (uv and packaging are in it).
    env = {**os.environ, "VENV": str(ROOT / ".venv")}
    return subprocess.run(
        ["bash", "scripts/lock.sh", *args],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_requirement_added_without_a_new_lock_is_caught(project_copy: Path) -> None:
    setup = project_copy / "setup.cfg"
    # A real, small package with no dependencies of its own that the lock does not hold.
    assert "iso8601" not in pins(LOCKS["dev"])
    setup.write_text(
        setup.read_text().replace("install_requires =\n", "install_requires =\n    iso8601>=2\n", 1)
    )
    covers = run_lock(project_copy, "--covers")
    assert covers.returncode == 1
    assert "iso8601 is not in requirements/runtime.txt" in covers.stderr
    check = run_lock(project_copy, "--check")
    assert check.returncode == 1
    assert "+iso8601==" in check.stderr  # the difference is shown
    assert "the lock is not current with setup.cfg" in check.stderr
    # And the refresh is the one command the message names.
    refresh = run_lock(project_copy)
    assert refresh.returncode == 0, refresh.stderr
    assert "iso8601" in pins(project_copy / "requirements/runtime.txt")
    assert run_lock(project_copy, "--check").returncode == 0


def test_a_narrowed_range_the_pin_no_longer_meets_is_caught(project_copy: Path) -> None:
    setup = project_copy / "setup.cfg"
    setup.write_text(setup.read_text().replace("aiohttp>=3.14,<4", "aiohttp>=3.14,<3.14.1", 1))
    if pins(LOCKS["runtime"])["aiohttp"] == "3.14.0":
        pytest.skip("the lock holds aiohttp 3.14.0, which the narrowed range still allows")
    covers = run_lock(project_copy, "--covers")
    assert covers.returncode == 1
    assert "does not satisfy aiohttp" in covers.stderr


def test_ensure_venv_and_the_image_install_from_the_lock_with_hashes() -> None:
    lib = (ROOT / "scripts/lib.sh").read_text()
    ensure_venv = re.search(r"^ensure_venv\(\) \{\n(.*?)^\}", lib, flags=re.S | re.M)
    assert ensure_venv
    body = ensure_venv.group(1)
    assert 'lock="$ROOT/requirements/dev.txt"' in body
    assert 'pip install -q --require-hashes -r "$lock"' in body
    assert 'pip install -q --no-deps -e "$ROOT"' in body
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert (
        "pip wheel --require-hashes --no-deps --wheel-dir /wheels -r requirements/runtime.txt" in dockerfile
    )


def test_test_sh_checks_the_lock() -> None:
    assert 'bash "$ROOT/scripts/lock.sh" --check' in (ROOT / "scripts/test.sh").read_text()


# --- Renovate -----------------------------------------------------------------------------------


def test_renovate_config_follows_the_schema() -> None:
    tool = require_tool("check-jsonschema")
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.renovate", str(ROOT / "renovate.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_renovate_refreshes_both_locks_pins_digests_and_keeps_the_server_series() -> None:
    config = json.loads((ROOT / "renovate.json").read_text())
    assert {"docker:pinDigests", "helpers:pinGitHubActionDigests"} <= set(config["extends"])
    patterns = config["pip-compile"]["managerFilePatterns"]
    for lock in LOCKS.values():
        relative = lock.relative_to(ROOT).as_posix()
        assert any(re.search(p.strip("/"), relative) for p in patterns), relative
        # Renovate re-runs the command in the header, so it must be uv's own.
        assert lock.read_text().splitlines()[1].lstrip("# ").startswith("uv pip compile "), relative
    assert config["lockFileMaintenance"]["enabled"] is True
    allowed = {
        rule["matchPackageNames"][0]: rule["allowedVersions"]
        for rule in config["packageRules"]
        if "allowedVersions" in rule
    }
    for name, wanted in SERVER_SERIES.items():
        # "<next": the series itself is allowed, the next one is not.
        assert allowed[name].startswith("<"), name
        limit = allowed[name][1:]
        assert tuple(map(int, wanted.split("."))) < tuple(map(int, limit.split("."))), name


# --- images and actions -------------------------------------------------------------------------


def test_the_base_image_is_pinned_by_digest() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm{DIGEST}$", dockerfile, flags=re.M)
    assert re.findall(r"^FROM (\S+)", dockerfile, flags=re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_every_third_party_image_names_a_version() -> None:
    for service, image in compose_images().items():
        if image.startswith("${IMAGE_NAME"):
            continue  # the application's own image, tagged by build.sh
        tag = image.split("@", 1)[0].rsplit(":", 1)
        assert len(tag) == 2, f"{service}: {image} has no tag"
        assert re.match(r"v?\d", tag[1]), f"{service}: {image} has no version tag"


def test_every_action_is_pinned_by_commit_with_its_release_in_a_comment() -> None:
    text = (ROOT / ".github/workflows/ci.yml").read_text()
    uses = re.findall(r"^\s*(?:- )?uses: (\S+)(.*)$", text, flags=re.M)
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), f"{action}: not pinned by commit"
        assert re.fullmatch(r" # v\d+\.\d+\.\d+", comment), f"{action}: no '# vX.Y.Z' release comment"


# --- server versions ----------------------------------------------------------------------------


def test_compose_and_ci_run_the_server_series_the_tests_run_on() -> None:
    images = compose_images()
    services = workflow()["jobs"]["test"]["services"]
    for name, wanted in SERVER_SERIES.items():
        assert series(images[name], name) == wanted, f"compose {name}: {images[name]}"
        assert series(services[name]["image"], name) == wanted, f"CI {name}: {services[name]['image']}"
    # Any other service on one of these images (the backup's pg_dump, say) runs the same series.
    for service, image in images.items():
        repository = image.split("@", 1)[0].rsplit(":", 1)[0]
        if repository in SERVER_SERIES:
            assert series(image, repository) == SERVER_SERIES[repository], f"compose {service}: {image}"


def test_the_servers_these_tests_use_are_that_series() -> None:
    async def postgres_version() -> str:
        connection = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD or None, database="postgres"
        )
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    client = redis.Redis(host=os.environ.get("REDIS_HOST", "127.0.0.1"), port=6379, db=TEST_REDIS_DB)
    credentials = pika.PlainCredentials(
        os.environ.get("RABBITMQ_USERNAME", "guest"), os.environ.get("RABBITMQ_PASSWORD", "guest")
    )
    amqp = pika.BlockingConnection(
        pika.ConnectionParameters(host=os.environ.get("RABBITMQ_HOST", "127.0.0.1"), credentials=credentials)
    )
    try:
        rabbitmq = amqp._impl.server_properties["version"]
    finally:
        amqp.close()
    running = {
        "postgres": asyncio.run(postgres_version()),
        "redis": str(client.info("server")["redis_version"]),
        "rabbitmq": rabbitmq.decode() if isinstance(rabbitmq, bytes) else str(rabbitmq),
    }
    for name, wanted in SERVER_SERIES.items():
        version = running[name].split()[0]
        assert ".".join(version.split(".")[: SERIES_PARTS[name]]) == wanted, f"{name} {running[name]}"


# --- the SBOM -----------------------------------------------------------------------------------


def test_build_writes_a_cyclonedx_sbom_of_the_images_packages(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "docker").chmod(0o755)
    result = subprocess.run(
        ["bash", "scripts/build.sh", "v9.8.7"],
        cwd=ROOT,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "SBOM_DIR": str(tmp_path / "sbom")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "microservices-app:v9.8.7"  # still the last line
    sbom = json.loads((tmp_path / "sbom/microservices-app-v9.8.7.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["specVersion"] == "1.6"
    root = sbom["metadata"]["component"]
    assert (root["name"], root["type"]) == ("microservices-app", "application")
    listed = {canonicalize_name(c["name"]): c["version"] for c in sbom["components"]}
    assert listed == pins(LOCKS["runtime"])
    for component in sbom["components"]:
        assert component["purl"].startswith(f"pkg:pypi/{component['name'].lower()}@")
        hashes = [h for ref in component.get("externalReferences", []) for h in ref.get("hashes", [])]
        assert hashes, f"{component['name']}: no hashes in the SBOM"
