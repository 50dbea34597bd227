"""The gateway's W3C trace context, with real nginx in front of the echo upstream: a valid
traceparent (and its tracestate) is passed on, and a request without one starts a trace whose id
is the request id the access log names."""

from __future__ import annotations

import re

from tests.config.test_gateway_live import Gateway, gateway

__all__ = ["gateway"]

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-00$")


def test_a_valid_traceparent_and_its_tracestate_are_passed_on(gateway: Gateway) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    seen = gateway.request("GET", "/api/orders/1", headers={"traceparent": traceparent, "tracestate": "a=1"})
    headers = seen.json()["headers"]
    assert headers["traceparent"] == traceparent
    assert headers["tracestate"] == "a=1"
    assert headers["X-Request-ID"] == traceparent.split("-")[1]


def test_without_a_traceparent_the_gateway_starts_the_trace_of_its_request_id(gateway: Gateway) -> None:
    seen = gateway.request("GET", "/api/orders/1", headers={"tracestate": "orphan=1"})
    headers = seen.json()["headers"]
    match = TRACEPARENT.match(headers["traceparent"])
    assert match, headers["traceparent"]
    # The trace id is the request id (access log, services); not sampled: each service decides.
    assert match.group(1) == headers["X-Request-ID"]
    assert match.group(2) == match.group(1)[:16]
    assert "tracestate" not in headers  # a tracestate belongs to the traceparent it came with
    [entry] = gateway.matching_log_entries(lambda e: e["http.request.id"] == headers["X-Request-ID"])
    assert entry["trace.id"] == match.group(1)


def test_a_malformed_traceparent_is_replaced_by_a_started_one(gateway: Gateway) -> None:
    seen = gateway.request("GET", "/api/orders/1", headers={"traceparent": "00-XYZ-bad-01"})
    headers = seen.json()["headers"]
    assert TRACEPARENT.match(headers["traceparent"])


def test_a_client_request_id_alone_starts_no_trace_at_the_gateway(gateway: Gateway) -> None:
    # The client named the request; the first service starts the trace (and logs that name).
    seen = gateway.request("GET", "/api/orders/1", headers={"X-Request-ID": "client-id.42"})
    headers = seen.json()["headers"]
    assert "traceparent" not in headers
    assert headers["X-Request-ID"] == "client-id.42"
