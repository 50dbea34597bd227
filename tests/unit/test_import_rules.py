"""The floors stay apart: SQL, rules and workers never import aiohttp, however indirectly.

What is checked, read from the source with ``ast`` (nothing is imported, so no module's import
side effects run and a violation is found even in code no test loads):

- A **core module** — every ``*/repository.py`` and ``*/schemas.py``, the service rules
  (``*/service.py``, ``order_api/lifecycle.py``, ``notifier/fanout.py``, ``notifier/delivery.py``,
  ``notifier/resend.py``, ``notifier/held.py``, ``notifier/queue.py``), the outbox
  (``common/outbox.py``, ``common/outbox_relay.py``), ``common/db.py``, ``common/errors.py``,
  ``common/events.py``, the rest of ``common``'s aiohttp-free floor (``COMMON_CORE``) and
  everything under ``workers/`` — must not reach any ``aiohttp`` module through the project's
  own imports. The failure names the chain, e.g.
  ``workers.resources -> notifier.deps -> notifier.users -> aiohttp``.
- **HTTP client adapters** are the one allowed door to aiohttp: ``notifier/channels/http.py``,
  ``sms.py`` and ``push.py`` speak HTTP to SMS and push providers, which is their whole job. The
  issue is the HTTP *server* floor (``aiohttp.web``, middlewares, app keys) leaking into SQL and
  rules, and rules depending on a concrete client; a worker that sends SMS necessarily loads an
  HTTP client. So the walk does not descend into an adapter, and an adapter itself may import the
  ``aiohttp`` client but never ``aiohttp.web`` nor any web-side module of the project. Clients of
  our own services (``order_api/users_client.py``, ``notifier/users.py``) are *not* adapters in
  this sense: rules receive them injected (a Protocol), they do not import them.

Third-party packages are not walked; the one known to load aiohttp on import,
``prometheus_async.aio`` (its exporter), counts as aiohttp itself. Imports inside functions count
(they run when called); imports under ``if TYPE_CHECKING:`` do not (they never run). Importing
``a.b`` also runs ``a/__init__.py``, so packages are walked too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "gateway_conf", "notifier", "order_api", "user_api", "workers")
# prometheus_async.aio imports its aiohttp exporter on import, so it counts as aiohttp.
FORBIDDEN = ("aiohttp", "prometheus_async.aio")
HTTP_CLIENT_ADAPTERS = frozenset(
    {"notifier.channels.http", "notifier.channels.sms", "notifier.channels.push"}
)
SERVICE_RULES = (
    "order_api.lifecycle",
    "notifier.fanout",
    "notifier.delivery",
    "notifier.resend",
    "notifier.held",
    "notifier.queue",
)
# The modules of common that repositories, rules and workers build on. The web side
# (web, contexts, health, metrics, security, auth, cli, types, the HTTP clients) is not listed.
COMMON_CORE = (
    "common.outbox",
    "common.outbox_relay",
    "common.db",
    "common.errors",
    "common.events",
    "common.amqp",
    "common.breaker",
    "common.failures",
    "common.jwt",
    "common.logging",
    "common.migrations",
    "common.openapi",
    "common.pagination",
    "common.ratelimit",
    "common.redis",
    "common.revocation",
    "common.settings",
    "common.tracing",
    "common.validation",
)


class ImportGraph:
    """Who imports whom among the project's modules under ``root``, read from source."""

    def __init__(self, root: Path, packages: tuple[str, ...]) -> None:
        self.root = root
        self.packages = packages
        self._imports: dict[str, tuple[str, ...]] = {}

    def module_file(self, module: str) -> Path | None:
        """The source file of a project module, or None for a third-party or missing one."""
        if module.split(".")[0] not in self.packages:
            return None
        base = self.root.joinpath(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def module_name(self, path: Path) -> str:
        parts = list(path.relative_to(self.root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)

    def modules(self, package: str) -> list[str]:
        return sorted(self.module_name(path) for path in (self.root / package).rglob("*.py"))

    def imports_of(self, module: str) -> tuple[str, ...]:
        """Modules that importing ``module`` runs directly (project ones resolved to modules)."""
        if module not in self._imports:
            self._imports[module] = self._read_imports(module)
        return self._imports[module]

    def _read_imports(self, module: str) -> tuple[str, ...]:
        path = self.module_file(module)
        if path is None:
            return ()
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        found: list[str] = []
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.extend(_with_parents(alias.name))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = module.split(".") if is_package else module.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base == "__future__":
                    continue
                found.extend(_with_parents(base))
                for alias in node.names:
                    # ``from pkg import sub`` runs pkg/sub.py when sub is a module, not a name.
                    if self.module_file(f"{base}.{alias.name}") is not None:
                        found.append(f"{base}.{alias.name}")
        return tuple(dict.fromkeys(name for name in found if name and name != module))

    def chain_to_aiohttp(
        self, start: str, *, stop_at: frozenset[str] = HTTP_CLIENT_ADAPTERS
    ) -> list[str] | None:
        """The shortest import chain from ``start`` to an aiohttp module, not passing ``stop_at``."""
        paths: dict[str, list[str]] = {start: [start]}
        queue = [start]
        while queue:
            current = queue.pop(0)
            for imported in self.imports_of(current):
                if imported in paths:
                    continue
                chain = [*paths[current], imported]
                if is_forbidden(imported):
                    return chain
                if imported in stop_at or self.module_file(imported) is None:
                    continue
                paths[imported] = chain
                queue.append(imported)
        return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except the bodies of ``if TYPE_CHECKING:`` (their ``else`` does run)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _with_parents(module: str) -> list[str]:
    """``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c`` when imported."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def is_forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


GRAPH = ImportGraph(ROOT, PACKAGES)


def core_modules() -> list[str]:
    modules: set[str] = set(COMMON_CORE)
    for package in PACKAGES:
        for module in GRAPH.modules(package):
            leaf = module.rsplit(".", 1)[-1]
            if leaf in ("repository", "service", "schemas") or package == "workers":
                modules.add(module)
    modules.update(SERVICE_RULES)
    return sorted(m for m in modules if GRAPH.module_file(m) is not None)


@pytest.mark.parametrize("module", core_modules())
def test_core_module_imports_no_aiohttp(module: str) -> None:
    chain = GRAPH.chain_to_aiohttp(module)
    assert chain is None, f"{module} imports aiohttp: " + " -> ".join(chain or [])


@pytest.mark.parametrize("adapter", sorted(HTTP_CLIENT_ADAPTERS))
def test_http_client_adapter_uses_only_the_client(adapter: str) -> None:
    assert GRAPH.module_file(adapter) is not None, f"{adapter} is named an adapter but does not exist"
    for imported in GRAPH.imports_of(adapter):
        assert not imported.startswith("aiohttp.web"), f"{adapter} imports the HTTP server: {imported}"
        # Another adapter is the same door (sms and push post through channels.http).
        if imported not in HTTP_CLIENT_ADAPTERS and GRAPH.module_file(imported) is not None:
            chain = GRAPH.chain_to_aiohttp(imported)
            assert chain is None, f"{adapter} reaches aiohttp beyond its client: " + " -> ".join(
                [adapter, *(chain or [])]
            )


def test_the_rule_covers_every_floor_the_issue_names() -> None:
    modules = core_modules()
    for expected in (
        "common.outbox",
        "common.outbox_relay",
        "common.db",
        "common.errors",
        "common.events",
        "order_api.repository",
        "user_api.service",
        "notifier.delivery",
        "notifier.fanout",
    ):
        assert expected in modules
    assert any(module.startswith("workers.") for module in modules)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)


def test_the_walk_names_a_transitive_chain(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/rules.py": "from . import store\n",
            "app/store.py": "def query():\n    from app.web import handler\n",
            "app/web.py": "from aiohttp import web\n",
            "app/channel.py": "import aiohttp\n",
            "app/sender.py": "from app import channel\n",
        },
    )
    graph = ImportGraph(tmp_path, ("app",))
    assert graph.chain_to_aiohttp("app.rules") == ["app.rules", "app.store", "app.web", "aiohttp"]
    # An HTTP client adapter is a door the walk does not pass through.
    assert graph.chain_to_aiohttp("app.sender", stop_at=frozenset({"app.channel"})) is None
    assert graph.chain_to_aiohttp("app.sender", stop_at=frozenset()) == [
        "app.sender",
        "app.channel",
        "aiohttp",
    ]


def test_type_checking_imports_are_not_followed(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/rules.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from app.web import handler\nelse:\n    import json\n"
            ),
            "app/web.py": "import aiohttp.web\n",
        },
    )
    graph = ImportGraph(tmp_path, ("app",))
    assert graph.chain_to_aiohttp("app.rules") is None
    assert set(graph.imports_of("app.rules")) == {"typing", "json"}


def test_the_real_web_side_is_found() -> None:
    assert GRAPH.chain_to_aiohttp("common.web") is not None
