"""The fuzz hooks drop only what the documents' extensions say is refused, and the fuzzer reads the
documents' patterns as the service does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

# How schemathesis reads a document's pattern when it draws values (pinned in requirements/dev.txt).
from schemathesis.core.jsonschema.patterns import compile_ecma_pattern

from common.openapi import _SHORTHAND, INSTANCE_DOCUMENT, load
from common.validation import WHITESPACE
from notifier.routes import OPENAPI_PATH as NOTIFICATIONS
from order_api.routes import OPENAPI_PATH as ORDERS
from tests.fuzz_hooks import breaks_an_extension
from user_api.routes import OPENAPI_PATH as USERS


def _body(path: Any, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    document = load(path)
    return document, document["components"]["schemas"][name]


ITEM = {"sku": "A", "name": "a", "quantity": 1, "unit_price": "1.00"}


@pytest.mark.parametrize(
    ("items", "breaks"),
    [([ITEM], False), ([ITEM, {**ITEM, "sku": "B"}], False), ([ITEM, {**ITEM, "quantity": 2}], True)],
)
def test_one_line_per_sku(items: list[dict[str, Any]], breaks: bool) -> None:
    document, schema = _body(ORDERS, "OrderIn")
    assert breaks_an_extension(document, schema, {"currency": "EUR", "items": items}) is breaks


@pytest.mark.parametrize(("password", "breaks"), [("a" * 72, False), ("é" * 36, False), ("é" * 37, True)])
def test_password_bytes(password: str, breaks: bool) -> None:
    for name in ("RegisterIn", "UserUpdateIn"):
        document, schema = _body(USERS, name)
        assert breaks_an_extension(document, schema, {"password": password}) is breaks


@pytest.mark.parametrize(
    ("created_from", "created_to", "breaks"),
    [
        ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", False),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", True),
        ("2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00Z", True),
        ("2026-01-02T00:00:00Z", None, False),
    ],
)
def test_created_from_before_created_to(created_from: str, created_to: str | None, breaks: bool) -> None:
    document, schema = _body(NOTIFICATIONS, "ResendMatching")
    body = {"status": ["dead"], "created_from": created_from, "created_to": created_to}
    assert breaks_an_extension(document, schema, body) is breaks


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield node["pattern"]
        for child in node.values():
            yield from _patterns(child)
    elif isinstance(node, list):
        for child in node:
            yield from _patterns(child)


@pytest.mark.parametrize("path", [USERS, ORDERS, NOTIFICATIONS, INSTANCE_DOCUMENT])
def test_no_pattern_uses_a_class_shorthand(path: Any) -> None:
    # \s, \d, \w mean other sets to schemathesis (ASCII) and to ECMA-262 than to the service's
    # re: a push token ending in "\xa0" was valid to the fuzzer, 422 to the service.
    patterns = list(_patterns(load(path)))
    assert patterns or path == INSTANCE_DOCUMENT
    assert [p for p in patterns if _SHORTHAND.search(p)] == []


def test_white_space_is_the_same_set_to_the_fuzzer_and_to_the_service() -> None:
    spelled = f"[{WHITESPACE}]"
    characters = [chr(c) for c in range(0x3100)] + ["\ufeff", "\uff10"]
    expected = [c for c in characters if c.isspace()]  # what Strip removes, and Python's \s
    fuzzer = compile_ecma_pattern(spelled)
    assert fuzzer is not None
    assert [c for c in characters if fuzzer.fullmatch(c)] == expected
    assert [c for c in characters if re.fullmatch(spelled, c)] == expected
    push_token = load(USERS)["components"]["schemas"]["UserUpdateIn"]["properties"]["push_token"]
    pattern = compile_ecma_pattern(push_token["anyOf"][0]["pattern"])
    assert pattern is not None
    assert not pattern.search("abcdefgh\xa0")
    assert pattern.search("abcdefgh")
