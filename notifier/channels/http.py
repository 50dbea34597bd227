"""What SMS and push providers have in common: a POST, and how to read its answer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from notifier.channels import PermanentFailure, TransientFailure, describe

# The one HTTP client session type the providers' adapters take; hosts open it through
# new_session() so that only this door to the providers imports aiohttp (the import rule).
Session = aiohttp.ClientSession


def new_session() -> Session:
    """A session for the SMS and push providers; open it on the loop that will use it."""
    return aiohttp.ClientSession()


# 408 and 429 are the client-side statuses that mean "later"; every 5xx does too.
RETRYABLE_4XX = frozenset({408, 425, 429})


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "").strip()
    try:
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP date; the regular backoff is good enough


async def post(
    session: aiohttp.ClientSession,
    provider: str,
    url: str,
    *,
    headers: Mapping[str, str],
    timeout_s: float,
    json_body: Any | None = None,
    form: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST and return the JSON answer of a 2xx; raise Transient/PermanentFailure otherwise."""
    try:
        async with session.post(
            url,
            json=json_body,
            data=form,
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as response:
            text = await response.text(errors="replace")
            status = response.status
            retry_after = _retry_after(response.headers)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransientFailure(f"{provider}: {describe(exc)}") from exc
    if 200 <= status < 300:
        try:
            answer = json.loads(text) if text else {}
        except ValueError:
            answer = {}
        return answer if isinstance(answer, dict) else {}
    detail = f"{provider}: HTTP {status}: {' '.join(text.split())[:300]}"
    if status >= 500 or status in RETRYABLE_4XX:
        raise TransientFailure(detail, retry_after_s=retry_after)
    raise PermanentFailure(detail)
