"""One order is one OpenTelemetry trace: the HTTP request (as the gateway forwards it, with a
traceparent), order_api's call to user_api, the outbox relay's publications, the workers' messages
and the SMTP send, all real (PostgreSQL, Redis, RabbitMQ, an SMTP server, a Dramatiq Worker)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from order_api.app import create_app
from order_api.settings import Settings
from tests.integration.notifier.helpers import SmtpServer, wait_until
from tests.integration.order_api.conftest import order_body
from tests.integration.order_api.test_app import RealUserApi
from tests.integration.workers.conftest import StartWorker
from user_api.settings import Settings as UserSettings

# What each hop contributes; every one of them must be in the order's trace.
EXPECTED_SPANS = {
    ("POST /api/orders", SpanKind.SERVER),  # order_api
    ("GET /api/users/{id}", SpanKind.CLIENT),  # order_api -> user_api
    ("GET /api/users/{id}", SpanKind.SERVER),  # user_api
    ("publish orders", SpanKind.PRODUCER),  # the relay: order.created to orders.process
    ("process orders.process", SpanKind.CONSUMER),  # the workers: the order and both emails
    ("smtp send", SpanKind.CLIENT),  # the email
}


@pytest.fixture
async def user_api(
    database_factory: Callable[[str], str], redis_flushed: int, jwt_keys: dict[str, str]
) -> AsyncIterator[RealUserApi]:
    settings = UserSettings(
        app_env="test",
        user_db_name=database_factory("users_tracing"),
        redis_db=redis_flushed,
        bcrypt_rounds=4,
        outbox_relay_enabled=False,
        log_format="console",
        **jwt_keys,
    )
    service = RealUserApi(settings)
    await service.start()
    yield service
    await service.stop()


def _span_names(spans: list[ReadableSpan]) -> set[tuple[str, SpanKind]]:
    return {(span.name, span.kind) for span in spans}


async def test_one_order_is_one_trace_from_the_request_to_the_smtp_send(
    spans: InMemorySpanExporter,
    aiohttp_client: Any,
    user_api: RealUserApi,
    start_worker: StartWorker,
    smtp: SmtpServer,
    orders_db: str,
    rabbitmq_vhost: str,
    redis_flushed: int,
    jwt_keys: dict[str, str],
) -> None:
    await start_worker()
    settings = Settings(
        app_env="test",
        order_db_name=orders_db,
        redis_db=redis_flushed,
        user_service_url=user_api.url,
        rabbitmq_vhost=rabbitmq_vhost,
        outbox_relay_enabled=True,
        log_format="console",
        **jwt_keys,
    )
    client = await aiohttp_client(create_app(settings))
    tokens = await user_api.register_and_login()
    trace_id, gateway_span_id = secrets.token_hex(16), secrets.token_hex(8)

    created = await client.post(
        "/api/orders",
        json=order_body(),
        headers={
            "Authorization": f"Bearer {tokens['access_token']}",
            # What the gateway forwards: the client's traceparent, or one it started.
            "traceparent": f"00-{trace_id}-{gateway_span_id}-01",
        },
    )
    assert created.status == 201, await created.text()
    order_id = (await created.json())["id"]
    assert created.headers["X-Request-ID"] == trace_id

    def in_trace() -> list[ReadableSpan]:
        wanted = int(trace_id, 16)
        return [s for s in spans.get_finished_spans() if s.context and s.context.trace_id == wanted]

    def roots(trace_spans: list[ReadableSpan]) -> list[tuple[str, int | None]]:
        """Spans whose parent is not (yet) among the ended ones: a span ends before its parent."""
        ended = {span.context.span_id for span in trace_spans if span.context}
        return [
            (span.name, span.parent.span_id if span.parent else None)
            for span in trace_spans
            if span.parent is None or span.parent.span_id not in ended
        ]

    # The order's email and the confirmation that orders.process caused, both sent, and every
    # span around the sends ended.
    request_root = [("POST /api/orders", int(gateway_span_id, 16))]
    with contextlib.suppress(AssertionError):  # a timeout: the assertions below say what is missing
        await wait_until(
            lambda: sum(s.name == "smtp send" for s in in_trace()) >= 2 and roots(in_trace()) == request_root,
            timeout_s=30,
        )
    trace_spans = in_trace()
    missing = EXPECTED_SPANS - _span_names(trace_spans)
    assert not missing, f"not in the order's trace: {sorted(name for name, _ in missing)}"
    # One tree, not just one id: every span's parent is in the trace, except the request's,
    # whose parent is the gateway's span from the traceparent.
    assert roots(trace_spans) == request_root
    by_id = {span.context.span_id: span for span in trace_spans if span.context}

    def chain(span: ReadableSpan | None) -> list[str]:
        names = []
        while span is not None:
            names.append(span.name)
            span = by_id.get(span.parent.span_id) if span.parent else None
        return names

    chains = [chain(span) for span in trace_spans if span.name == "smtp send"]
    assert all(names[-1] == "POST /api/orders" for names in chains), chains
    # Both emails are sent by orders.process itself: the confirmation is handed on, not relayed.
    assert len(chains) == 2, chains
    assert all(names[1] == "process orders.process" for names in chains), chains
    assert ("publish notifications", SpanKind.PRODUCER) not in _span_names(trace_spans)

    # The emails name the trace: the W3C traceparent of their send, and the trace id for people.
    mails = [m for m in smtp.handler.messages if order_id in str(m["Subject"])]
    assert len(mails) >= 2
    for mail in mails:
        assert mail["X-Trace-Id"] == trace_id
        assert str(mail["traceparent"]).split("-")[1] == trace_id
