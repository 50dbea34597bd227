"""The `live_stack` marker: tests that need `./scripts/deploy.sh local` running (with Prometheus).

They run only when asked for (`pytest -m live_stack`, the end-to-end phase); a plain `pytest`
leaves them out, so the unit suite needs no running stack.
"""

from __future__ import annotations

import pytest

from tests.monitoring.helpers import promtool_or_skip, tool_or_skip

LIVE_STACK = "live_stack"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{LIVE_STACK}: needs ./scripts/deploy.sh local running; select with -m {LIVE_STACK}"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LIVE_STACK in (config.option.markexpr or ""):
        return  # -m live_stack or -m "not live_stack": pytest's own selection decides
    live = [item for item in items if item.get_closest_marker(LIVE_STACK)]
    if live:
        config.hook.pytest_deselected(items=live)
        items[:] = [item for item in items if not item.get_closest_marker(LIVE_STACK)]


@pytest.fixture(scope="session")
def promtool() -> str:
    return promtool_or_skip()


@pytest.fixture(scope="session")
def amtool() -> str:
    return tool_or_skip("amtool", "prometheus-alertmanager")
