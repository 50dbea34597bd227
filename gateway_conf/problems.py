"""The gateway's own errors, in the services' problem+json shape (common/errors.py).

nginx answers some requests itself: a path it does not route (404), a method it refuses (405,
TRACE included, which nginx rejects before any location), a body over the limit (413), a rate
limit (429), an instance that does not answer (502, 504) or none at all (503). Each is an RFC 9457
problem with ``instance`` (the path) and ``request_id`` (the id of the access log and of the
``X-Request-ID`` header); a 405 carries ``Allow`` (the methods the public documents declare for
the path) and a 429 ``Retry-After`` (when the zone lets the next request through).
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Sequence
from pathlib import Path

import yaml

# The gateway's own errors, in the services' problem+json shape.
ERROR_PAGES: dict[int, tuple[str, str]] = {
    400: ("Bad Request", "The request could not be read."),
    403: ("Forbidden", "This origin is not allowed to call the API."),
    404: ("Not Found", "No route matches this path."),
    405: ("Method Not Allowed", "This method is not allowed here."),
    413: ("Content Too Large", "The request body is larger than 64 KiB."),
    414: ("URI Too Long", "The request URI is too long."),
    429: ("Too Many Requests", "Too many requests from this address; slow down and retry."),
    500: ("Internal Server Error", "The gateway failed to handle the request."),
    502: ("Bad Gateway", "The service behind this route is not answering."),
    503: ("Service Unavailable", "The service behind this route is unavailable."),
    504: ("Gateway Timeout", "The service behind this route did not answer in time."),
}


def error_pages() -> str:
    lines = []
    for status in ERROR_PAGES:
        lines.append(f"error_page {status} = @problem_{status};")
    for status, (title, detail) in ERROR_PAGES.items():
        # The services' shape (common/errors.py), with the request id the logs carry.
        body = (
            f'{{"type":"about:blank","title":"{title}","status":{status},"detail":"{detail}",'
            '"instance":"$gw_problem_instance","request_id":"$gw_request_id"}\\n'
        )
        lines += [
            f"location @problem_{status} {{",
            "    include snippets/api_headers.conf;",
            *_PROBLEM_HEADERS.get(status, ()),
            # No extension-based type (nginx's built-in "html" -> text/html on /x.html).
            "    types { }",
            "    default_type application/problem+json;",
            f"    return {status} '{body}';",
            "}",
        ]
    return "\n".join(lines)


# RFC 9110: a 405 lists what the resource allows; a 429 says when to come back.
_PROBLEM_HEADERS = {
    405: ("    add_header Allow $gw_allow always;",),
    429: ("    add_header Retry-After $gw_retry_after always;",),
}
# What the gateway serves itself, or proxies to a read-only endpoint: GET (and HEAD) only.
GATEWAY_READ_ONLY = r"^/(health(/(user|order|notification))?|openapi/[a-z]+\.(yaml|json)|docs(/.*)?)$"


def document_path(package: str) -> Path:
    """A service's public OpenAPI document, found without importing the service (the image
    installs the services as packages; only gateway_conf is a folder next to the templates)."""
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        raise ValueError(f"the gateway's Allow headers need the {package} package and its openapi.yaml")
    return Path(folders[0]) / "openapi.yaml"


def allow_map(services: Sequence[str]) -> str:
    """``$uri`` -> the methods the public documents declare for it, for the Allow of a 405.

    nginx itself answers TRACE (and methods it does not parse) with 405 before any location or
    service sees the request; the services' own 405s carry their Allow already.
    """
    lines = [f'        "~{GATEWAY_READ_ONLY}" "GET, HEAD";']
    for package in services:
        document = yaml.safe_load(document_path(package).read_text())
        # The gateway routes /api/ only (nginx.conf); anything else of a document is not its to answer.
        for route, item in sorted(r for r in document["paths"].items() if r[0].startswith("/api/")):
            methods = {m.upper() for m in item if m in ("get", "put", "post", "delete", "patch")}
            if "GET" in methods:
                methods.add("HEAD")
            if not re.fullmatch(r"/[A-Za-z0-9/_{}-]+", route):
                raise ValueError(f"{package}/openapi.yaml: path {route!r} cannot be put in nginx's config")
            pattern = "^" + re.sub(r"\{[^}/]+\}", "[^/]+", route) + "$"
            lines.append(f'        "~{pattern}" "{", ".join(sorted(methods))}";')
    return "\n".join(lines)


def retry_after(rate: str) -> int:
    """Seconds until the zone lets one more request through (at least 1)."""
    count, unit = rate.removesuffix("r/s").removesuffix("r/m"), rate[-1]
    per_second = int(count) / (60 if unit == "m" else 1)
    return max(1, math.ceil(1 / per_second))
