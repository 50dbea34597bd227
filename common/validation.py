"""Validating data against pydantic models, with failures as InvalidInput (422) listing each field.

No aiohttp here, so service code can validate too.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from common.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"field": _loc(err["loc"]), "message": err["msg"]} for err in exc.errors(include_url=False)]


def validate(model: type[M], data: object) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput("the request does not pass validation", errors=validation_errors(exc)) from None
