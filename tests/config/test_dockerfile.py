"""The image: hadolint, the shape of the final stage, what goes into the build context, what the
installed package contains, and the health check script the image runs."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.config.conftest import ROOT, require_tool
from tests.net import free_port

DOCKERFILE = (ROOT / "Dockerfile").read_text()
HEALTHCHECK = ROOT / "docker/healthcheck.py"


def stages() -> dict[str, str]:
    """Stage name -> its instructions (line continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    parts = re.split(r"^FROM\s+", text, flags=re.MULTILINE)[1:]
    result = {}
    for part in parts:
        header, _, body = part.partition("\n")
        name = header.split(" AS ")[-1].strip() if " AS " in header else header.strip()
        result[name] = header + "\n" + body
    return result


def packages() -> list[str]:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    include = setup["options.packages.find"]["include"].split()
    return sorted({name.rstrip("*") for name in include})


def test_hadolint_finds_nothing() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_stage_is_slim_without_compilers_and_not_root() -> None:
    final = list(stages().items())[-1]
    name, body = final
    assert name == "runtime"
    # The exact release, pinned by digest (renovate.json keeps both current).
    assert re.search(
        r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$",
        DOCKERFILE,
        flags=re.MULTILINE,
    )
    assert body.startswith("${PYTHON_IMAGE} AS runtime")
    assert "apt-get" not in body
    assert not re.search(r"build-essential|\bgcc\b|-dev\b", body)
    user = re.findall(r"^USER\s+(\S+)", body, flags=re.MULTILINE)
    assert user
    assert user[-1].split(":")[0] not in ("0", "root")
    assert user[-1].split(":")[0].isdigit()  # numeric, so Kubernetes' runAsNonRoot can check it


def test_wheels_are_built_in_the_builder_and_never_copied_into_a_layer() -> None:
    builder, runtime = stages()["builder"], stages()["runtime"]
    assert "pip wheel" in builder
    assert "--mount=type=bind,from=builder,source=/wheels" in runtime
    assert "COPY --from=builder" not in runtime


def test_image_health_check_uses_the_script() -> None:
    assert re.search(r'HEALTHCHECK .*CMD \["python", "/app/docker/healthcheck.py"\]', stages()["runtime"])


def test_every_package_is_built_into_the_image() -> None:
    builder = stages()["builder"]
    for package in packages():
        assert re.search(rf"^COPY {package} \./{package}$", builder, flags=re.MULTILINE), package


def test_dependencies_come_from_the_hashed_lock_before_any_source() -> None:
    builder, runtime = stages()["builder"], stages()["runtime"]
    lock_install = re.search(
        r"^RUN pip wheel --require-hashes --no-deps .*-r requirements/runtime\.txt$", builder, re.M
    )
    assert lock_install, (
        "the dependencies are not downloaded from requirements/runtime.txt with --require-hashes"
    )
    # Only the lock is in the build context before that layer, so a code change reuses it.
    before = builder[: lock_install.start()]
    assert re.findall(r"^COPY (\S+)", before, flags=re.MULTILINE) == ["requirements/runtime.txt"]
    # Nothing resolved in the final stage: the wheels only, then pip check for completeness.
    assert "pip install --no-index --no-deps /wheels/*.whl" in runtime
    assert "pip check" in runtime


def copy_sources() -> list[str]:
    sources = []
    for line in re.sub(r"\\\n\s*", " ", DOCKERFILE).splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            words = [w for w in line.split()[1:] if not w.startswith("--")]
            sources += words[:-1]
    return sources


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert rules[0] == "**", "the build context is an allow-list: everything is ignored first"
    for source in copy_sources():
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert any(source == a or source.startswith(a + "/") for a in allowed), f"{source} is .dockerignored"


def test_secrets_and_local_state_stay_out_of_the_build_context() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for pattern in ("**/.env", "**/*.pem", "**/*.key"):
        assert pattern in ignore
    for never in ("!var", "!.env", "!.git", "!.venv", "!tests"):
        assert not any(line.startswith(never) for line in ignore)


@pytest.fixture(scope="module")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if build.returncode != 0:
        # Without setuptools in the venv the wheel is built in an isolated environment instead.
        build = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert build.returncode == 0, build.stderr
    return next(out.glob("microservices_app-*.whl"))


def test_the_installed_package_carries_its_migrations(project_wheel: Path) -> None:
    names = set(zipfile.ZipFile(project_wheel).namelist())
    migrations = [
        p.relative_to(ROOT).as_posix() for p in ROOT.glob("*/sql/**/*.sql") if ".venv" not in p.parts
    ]
    assert migrations
    missing = [m for m in migrations if m not in names]
    assert not missing, f"not in the wheel (so not in the image): {missing}"


def test_the_installed_package_carries_its_openapi_documents(project_wheel: Path) -> None:
    names = set(zipfile.ZipFile(project_wheel).namelist())
    for package in ("user_api", "order_api", "notifier"):
        assert f"{package}/openapi.yaml" in names


# --- docker/healthcheck.py ---------------------------------------------------------------------


@pytest.fixture
def health_server() -> Iterator[int]:
    import asyncio
    import threading

    port = free_port()
    loop = asyncio.new_event_loop()

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def not_ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "failing"}, status=503)

    app = web.Application()
    app.router.add_get("/health", ok)
    app.router.add_get("/health/ready", not_ready)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(runner.cleanup())
    loop.close()


def run_healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_healthcheck_passes_on_2xx(health_server: int) -> None:
    assert run_healthcheck(f"http://127.0.0.1:{health_server}/health").returncode == 0


def test_healthcheck_reads_the_url_from_the_environment(health_server: int) -> None:
    result = run_healthcheck(env={"HEALTHCHECK_URL": f"http://127.0.0.1:{health_server}/health/ready"})
    assert result.returncode == 1
    assert "answered 503" in result.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    result = run_healthcheck(f"http://127.0.0.1:{free_port()}/health")
    assert result.returncode == 1
    assert "unreachable" in result.stderr


@pytest.mark.parametrize("url", ["", "file:///etc/passwd", "ftp://example.com/"])
def test_healthcheck_refuses_what_is_not_http(url: str) -> None:
    result = run_healthcheck(url)
    assert result.returncode == 1
    assert "not an http(s) URL" in result.stderr
