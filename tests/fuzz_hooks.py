"""schemathesis hooks: the constraints of the documents that JSON Schema cannot say.

The documents say them as extensions (common/openapi.py generates them from the models):
``x-max-utf8-bytes`` (a password is at most 72 bytes in UTF-8; ``maxLength`` counts characters),
``x-unique-by`` (each sku once per order; ``uniqueItems`` compares whole items) and ``x-ordered``
(a resend's created_from before its created_to; JSON Schema cannot compare fields). A body that
breaks one is refused with 422, as the document says, so schemathesis' "schema-valid request
rejected" (positive_data_acceptance) is not a failure for it; every other check still runs on it.

One more is a matter of state, not of shape: an ``Idempotency-Key`` used again with another body
is a 422 (as the order document and the IETF idempotency-key draft say), and the fuzzer reuses
short keys ("0") across bodies. That 422 names the header in ``errors``; nothing else is dropped.
Loaded with ``SCHEMATHESIS_HOOKS=tests.fuzz_hooks`` (scripts/integration-tests.sh).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import schemathesis
from schemathesis.core.failures import Failure


def _resolve(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def breaks_an_extension(document: dict[str, Any], schema: Any, value: Any) -> bool:
    """Whether ``value`` breaks an ``x-max-utf8-bytes`` or ``x-unique-by`` of ``schema``."""
    schema = _resolve(document, schema)
    if not isinstance(schema, dict):
        return False
    if any(breaks_an_extension(document, option, value) for option in schema.get("anyOf", [])):
        return True
    if isinstance(value, str) and "x-max-utf8-bytes" in schema:
        return len(value.encode("utf-8", "surrogatepass")) > schema["x-max-utf8-bytes"]
    if isinstance(value, list):
        key = schema.get("x-unique-by")
        if key is not None:
            keys = [item.get(key) for item in value if isinstance(item, dict) and key in item]
            if len(keys) != len(set(map(repr, keys))):
                return True
        return any(breaks_an_extension(document, schema.get("items"), item) for item in value)
    if isinstance(value, dict):
        if _out_of_order(value, schema.get("x-ordered")):
            return True
        properties = schema.get("properties", {})
        return any(breaks_an_extension(document, properties.get(k), v) for k, v in value.items())
    return False


def _out_of_order(value: dict[str, Any], names: Any) -> bool:
    """Whether two date-times ``x-ordered`` names are both given and not in increasing order."""
    if not isinstance(names, list) or len(names) != 2:
        return False
    first, second = (value.get(name) for name in names)
    if not (isinstance(first, str) and isinstance(second, str)):
        return False
    try:
        return datetime.fromisoformat(first) >= datetime.fromisoformat(second)
    except (ValueError, TypeError):  # not date-times (the service's own 422) or naive vs aware
        return False


def _body_schema(case: Any) -> Any:
    body = case.operation.definition.raw.get("requestBody") or {}
    media = body.get("content", {}).get("application/json", {})
    return media.get("schema")


@schemathesis.hook
def filter_failure(context: Any, failure: Failure, case: Any, response: Any) -> bool:
    if type(failure).__name__ != "RejectedPositiveData" or response.status_code != 422:
        return True
    if _reused_idempotency_key(response):
        return False
    document = case.operation.schema.raw_schema
    return not breaks_an_extension(document, _body_schema(case), case.body)


def _reused_idempotency_key(response: Any) -> bool:
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return False
    return [e.get("field") for e in errors] == ["Idempotency-Key"] and "reused" in str(errors)
