"""The OpenAPI documents: their model schemas generated from the pydantic models (no aiohttp here).

Each service's ``openapi.yaml`` is written by hand for what only prose and HTTP can say (paths,
statuses, headers, examples) and ends with a block of component schemas generated from the
models its handlers validate requests with and answer with, so the document cannot be looser
or stricter than the code::

    python -m common.openapi sync      # rewrite the generated block of every document
    python -m common.openapi check     # exit 1 when a block is not what the models generate

Each service's ``tests/*/test_openapi.py`` runs the check, so a constraint added to a model
without regenerating the document fails in CI.

Two documents per service: the public one (``/openapi.yaml``, ``/openapi.json``: what the gateway
routes, ``/api/...``) and the per-instance one (``common/openapi-instance.yaml`` at
``/openapi/instance.yaml`` and ``.json``: liveness, readiness, metrics, the documents), which
only the instance answers, never the gateway. ``common/web.py`` serves them as YAML and JSON.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from common.validation import NO_NUL_PATTERN

INSTANCE_DOCUMENT = Path(__file__).with_name("openapi-instance.yaml")
BEGIN = "    # BEGIN generated from the pydantic models (python -m common.openapi sync); do not edit\n"
END = "    # END generated schemas\n"
REF_TEMPLATE = "#/components/schemas/{model}"
# The services whose documents `sync` and `check` cover: module holding OPENAPI_MODELS, document.
DOCUMENTS = {
    "user_api": "user_api.schemas",
    "order_api": "order_api.schemas",
    "notifier": "notifier.schemas",
}
# Any JSON value without NUL in a string or a key: what parse_body accepts where a model says Any.
JSON_VALUE = "JsonValue"
_JSON_VALUE_SCHEMA: dict[str, Any] = {
    "description": "Any JSON value; no string or key may contain NUL",
    "anyOf": [
        {"type": "string", "pattern": NO_NUL_PATTERN},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": {"$ref": REF_TEMPLATE.format(model=JSON_VALUE)}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL_PATTERN},
            "additionalProperties": {"$ref": REF_TEMPLATE.format(model=JSON_VALUE)},
        },
    ],
}
# \s, \d, \w and \b (and their negations) mean one set in Python's re, another in ECMA-262 (a
# client's validator) and a third in schemathesis (ASCII): a document refuses them.
_SHORTHAND = re.compile(r"(?<!\\)(?:\\\\)*\\[sSdDwWbB]")
# Keywords whose value is one schema, or a list or a mapping of schemas.
_ONE = ("items", "not", "additionalProperties", "propertyNames", "contains", "if", "then", "else")
_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAPPING = ("properties", "patternProperties", "$defs")


@dataclass(frozen=True)
class Models:
    """The models a service's document describes: request models (``inputs``, validation mode)
    and answers (``outputs``, serialization mode). Nested models come along under their names."""

    inputs: Sequence[type[BaseModel]] = ()
    outputs: Sequence[type[BaseModel]] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


def _children(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in _ONE:
        if isinstance(node.get(key), dict):
            yield node[key]
    for key in _MANY:
        for item in node.get(key, ()):
            if isinstance(item, dict):
                yield item
    for key in _MAPPING:
        yield from (item for item in node.get(key, {}).values() if isinstance(item, dict))


def _nullable(node: dict[str, Any]) -> bool:
    kinds = node.get("type")
    if kinds == "null" or (isinstance(kinds, list) and "null" in kinds):
        return True
    return any(_nullable(option) for option in [*node.get("anyOf", []), *node.get("oneOf", [])])


def _tidy(node: dict[str, Any], *, request: bool) -> None:
    """Titles out (noise next to property names); in requests, what parse_body refuses said too."""
    node.pop("title", None)
    pattern = node.get("pattern")
    if isinstance(pattern, str) and _SHORTHAND.search(pattern):
        raise ValueError(
            f"pattern {pattern!r}: a class shorthand reads differently to Python, ECMA-262 and"
            " schemathesis; spell the class out (common.validation.WHITESPACE for white space)"
        )
    if "default" in node and node["default"] is None and not _nullable(node):
        # A field that may be left out but not sent as null (pydantic's default=None).
        del node["default"]
    if request:
        if node.get("type") == "string" and not ({"pattern", "format", "enum", "const"} & node.keys()):
            node["pattern"] = NO_NUL_PATTERN
        if node.get("type") == "object" and node.get("additionalProperties") is True:
            node["propertyNames"] = {"pattern": NO_NUL_PATTERN}
            node["additionalProperties"] = {"$ref": REF_TEMPLATE.format(model=JSON_VALUE)}
    for child in _children(node):
        _tidy(child, request=request)


def _uses(schemas: Mapping[str, Any], ref: str) -> bool:
    return ref in json.dumps(schemas)


def _generate(models: Sequence[type[BaseModel]], *, request: bool) -> dict[str, Any]:
    if not models:
        return {}
    mode: JsonSchemaMode = "validation" if request else "serialization"
    _, top = models_json_schema([(model, mode) for model in models], ref_template=REF_TEMPLATE)
    schemas: dict[str, Any] = copy.deepcopy(top.get("$defs", {}))
    for schema in schemas.values():
        _tidy(schema, request=request)
    return schemas


def component_schemas(models: Models) -> dict[str, Any]:
    """The generated component schemas of a document, by name, in a stable order."""
    requests = _generate(models.inputs, request=True)
    answers = _generate(models.outputs, request=False)
    clash = sorted(name for name in requests.keys() & answers.keys() if requests[name] != answers[name])
    if clash:
        raise ValueError(f"{', '.join(clash)}: one name, two schemas (request and answer); split the model")
    schemas = {**requests, **answers, **models.extra}
    if _uses(schemas, REF_TEMPLATE.format(model=JSON_VALUE)):
        schemas[JSON_VALUE] = _JSON_VALUE_SCHEMA
    return dict(sorted(schemas.items()))


def generated_block(models: Models) -> str:
    body = yaml.safe_dump(
        component_schemas(models), sort_keys=False, width=100, allow_unicode=False, default_flow_style=None
    )
    return BEGIN + "".join(f"    {line}\n" if line else "\n" for line in body.splitlines()) + END


def _split(text: str, path: Path) -> tuple[str, str, str]:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{path}: no generated block (the BEGIN/END comments under components.schemas)")
    return text[:start], text[start : end + len(END)], text[end + len(END) :]


def block_in(path: Path) -> str:
    return _split(path.read_text(), path)[1]


def sync(path: Path, models: Models) -> bool:
    """Rewrite the generated block of ``path``; True if it changed."""
    text = path.read_text()
    before, block, after = _split(text, path)
    new = generated_block(models)
    if new == block:
        return False
    path.write_text(before + new + after)
    return True


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not an OpenAPI document")
    return document


# --- command line ------------------------------------------------------------------------------


def _document_models(service: str) -> tuple[Path, Models]:
    module = importlib.import_module(DOCUMENTS[service])
    models: Models = module.OPENAPI_MODELS
    return Path(module.__file__ or "").with_name("openapi.yaml"), models


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.openapi", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("sync", "check"))
    parser.add_argument("services", nargs="*", help=f"of {', '.join(sorted(DOCUMENTS))} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.services) - set(DOCUMENTS))
    if unknown:
        parser.error(f"unknown service(s): {', '.join(unknown)}")
    stale = []
    for service in args.services or sorted(DOCUMENTS):
        path, models = _document_models(service)
        if args.command == "sync":
            print(f"{path}: {'rewritten' if sync(path, models) else 'up to date'}")
        elif block_in(path) != generated_block(models):
            stale.append(str(path))
    if stale:
        print(f"not what the models generate (run python -m common.openapi sync): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
