"""Validating data against pydantic models, with failures as InvalidInput (422) listing each field.

No aiohttp here, so service code can validate too.

The models are also where the OpenAPI documents' schemas come from (common/openapi.py), so every
constraint is written so JSON Schema can say it: patterns, lengths and ranges rather than code in
validators. Patterns are matched by Python's ``re`` (``regex_engine="python-re"``), as ``jsonschema``
matches them, and use no class shorthand (``\\s``, ``\\d``, ``\\w``): those mean one set in Python,
another in ECMA-262 (a client's validator) and a third in schemathesis (ASCII), so white space is
spelled out (``WHITESPACE``) and a document's pattern means the same thing to all of them.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError

from common.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)

# What common.web.parse_body refuses in any string (PostgreSQL text cannot hold NUL); the
# generated schemas give it to every string that has no stricter pattern of its own.
NO_NUL_PATTERN = r"^[^\x00]*$"
# White space, spelled out: what str.strip() removes and Python's \s matches. (schemathesis
# reads \s as ASCII only, so it took "\xa0" for a token character and the service refused it.)
WHITESPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Free text (names, reasons): no control characters (they end up in email headers and
# templates) and at least one character that is not white space. Surrounding white space is
# allowed and stripped after validation, so lengths count what the client sent.
TEXT_PATTERN = rf"^[^\x00-\x1f\x7f]*[^{WHITESPACE}\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
# The base of every request model: unknown fields refused, strings bounded, Python patterns.
INPUT_CONFIG = ConfigDict(extra="forbid", str_max_length=4096, regex_engine="python-re")


def whole_number(value: object) -> object:
    """JSON Schema's "integer" includes 2.0: a number without a fraction is an integer (use before
    ``StrictInt``, which refuses "2" and true as the schema does, and 2.0 as it should not)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return value


def _strip(value: str) -> str:
    return value.strip()


Strip = AfterValidator(_strip)


def text(max_length: int) -> StringConstraints:
    """The constraints of a free-text field: ``Annotated[str, text(100), Strip]``."""
    return StringConstraints(min_length=1, max_length=max_length, pattern=TEXT_PATTERN)


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"field": _loc(err["loc"]), "message": err["msg"]} for err in exc.errors(include_url=False)]


def validate(model: type[M], data: object) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput("the request does not pass validation", errors=validation_errors(exc)) from None


def _case_insensitive(word: str) -> str:
    return "".join(f"[{ch.lower()}{ch.upper()}]" for ch in word)


def words_except(excluded: Sequence[str], *, min_length: int, max_length: int) -> str:
    """A regex for the words of ASCII letters, ``min_length`` to ``max_length`` long, except
    ``excluded`` (in any case). No look-around: not every JSON Schema tool can generate from it."""
    parts: list[str] = []
    words = {word.lower() for word in excluded}
    prefixes = sorted({word[:i] for word in words for i in range(len(word) + 1)})
    for prefix in prefixes:
        # The prefix, then a letter no excluded word continues it with, then any letters.
        taken = {w[len(prefix)] for w in words if w.startswith(prefix) and len(w) > len(prefix)}
        free = "".join(c + c.upper() for c in string.ascii_lowercase if c not in taken)
        longest = max_length - len(prefix) - 1
        if longest >= 0:
            shortest = max(0, min_length - len(prefix) - 1)
            parts.append(f"{_case_insensitive(prefix)}[{free}][A-Za-z]{{{shortest},{longest}}}")
        # The prefix itself, when it is long enough and not excluded.
        if prefix not in words and min_length <= len(prefix) <= max_length:
            parts.append(_case_insensitive(prefix))
    return "(?:" + "|".join(parts) + ")"
