"""What an admin may send and to whom (notifier.service), with a dict of users and a fake queue."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, cast

import pytest

from common.errors import DependencyUnavailable, Forbidden, InvalidInput
from common.jwt import Caller
from notifier import repository, service
from notifier.queue import EnqueueFailed
from notifier.schemas import ListQuery, SendIn
from notifier.templates import TemplateRenderer
from tests.unit.fakes import NOW, FakePool, install

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ADMIN = Caller(str(uuid.uuid4()), "admin", "jti", "sid", 0, "admin-token")


class DictUsers:
    def __init__(self, *users: dict[str, Any]) -> None:
        self.users = {u["id"]: u for u in users}
        self.tokens: list[str] = []

    async def get(self, user_id: str, bearer_token: str) -> dict[str, Any] | None:
        self.tokens.append(bearer_token)
        return self.users.get(user_id)


class FakeQueue:
    def __init__(self, *, fails: bool = False) -> None:
        self.enqueued: list[str] = []
        self.fails = fails

    async def enqueue_delivery(self, notification_id: str, *, trace_id: str | None) -> None:
        if self.fails:
            raise EnqueueFailed("nack")
        self.enqueued.append(notification_id)


class FakeNotifications:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.unqueued: dict[str, str] = {}
        self.listed_for: list[str | None] = []

    async def insert_notification(self, db: Any, *, notification_id: str, **fields: Any) -> bool:
        self.rows[notification_id] = {
            "id": notification_id,
            "status": "queued",
            "attempts": 0,
            "last_error": None,
            "provider_message_id": None,
            "created_at": NOW,
            "updated_at": NOW,
            "sent_at": None,
            "resends": 0,
            "resent_at": None,
            **{
                k: fields[k]
                for k in ("channel", "template", "event_type", "event_id", "user_id", "recipient")
            },
            "trace_id": fields["trace_id"],
        }
        return True

    async def mark_unqueued(self, db: Any, notification_id: str, error: str) -> None:
        self.unqueued[notification_id] = error

    async def get_notification(self, db: Any, notification_id: str) -> dict[str, Any] | None:
        return self.rows.get(notification_id)

    async def list_notifications(
        self, db: Any, *, user_id: str | None, **filters: Any
    ) -> tuple[list[Any], int]:
        self.listed_for.append(user_id)
        return [], 0


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(TEMPLATES)


@pytest.fixture
def rows(monkeypatch: pytest.MonkeyPatch) -> FakeNotifications:
    fake = FakeNotifications()
    install(monkeypatch, repository, fake)
    return fake


def user(**fields: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "email": "ada@example.com",
        "name": "Ada",
        "phone": None,
        "push_token": None,
        "notification_preferences": {"email": True, "sms": False, "push": False},
        **fields,
    }


def deps(
    renderer: TemplateRenderer, users: DictUsers | None = None, queue: FakeQueue | None = None
) -> service.Deps:
    return service.Deps(
        cast(Any, FakePool()), renderer, cast(Any, queue or FakeQueue()), users or DictUsers()
    )


def send_in(**fields: Any) -> SendIn:
    return SendIn.model_validate({"channel": "email", "template": "announcement", **fields})


def sample_context(renderer: TemplateRenderer) -> dict[str, Any]:
    return renderer.current.sample_context("announcement")


async def test_an_announcement_to_an_address_is_stored_and_queued(
    renderer: TemplateRenderer, rows: FakeNotifications
) -> None:
    queue = FakeQueue()
    context = sample_context(renderer)
    out = await service.send(
        deps(renderer, queue=queue),
        ADMIN,
        send_in(recipient="ada@example.com", context=context),
        trace_id="t1",
    )
    assert queue.enqueued == [out.id]
    assert out.recipient == "ada@example.com"
    assert out.status == "queued"


async def test_to_a_user_the_address_comes_from_user_api_with_the_callers_token(
    renderer: TemplateRenderer, rows: FakeNotifications
) -> None:
    ada = user()
    users = DictUsers(ada)
    context = sample_context(renderer)
    out = await service.send(
        deps(renderer, users), ADMIN, send_in(user_id=ada["id"], context=context), trace_id=None
    )
    assert out.recipient == "ada@example.com"
    assert users.tokens == ["admin-token"]


async def test_an_unknown_template_is_invalid_input(
    renderer: TemplateRenderer, rows: FakeNotifications
) -> None:
    with pytest.raises(InvalidInput) as raised:
        await service.send(
            deps(renderer), ADMIN, send_in(template="no.such", recipient="a@example.com"), trace_id=None
        )
    assert raised.value.errors == [
        {"field": "template", "message": "there is no email template named 'no.such'"}
    ]
    assert rows.rows == {}


async def test_a_context_that_does_not_fit_the_template_is_the_admins_422(
    renderer: TemplateRenderer, rows: FakeNotifications
) -> None:
    with pytest.raises(InvalidInput) as raised:
        await service.send(
            deps(renderer), ADMIN, send_in(recipient="a@example.com", context={}), trace_id=None
        )
    assert raised.value.errors is not None
    assert raised.value.errors[0]["field"] == "context"
    assert rows.rows == {}


@pytest.mark.parametrize(
    ("channel", "recipient"),
    [("email", "not-an-address"), ("sms", "07700900123"), ("push", "short")],
)
def test_a_recipient_must_suit_its_channel(channel: str, recipient: str) -> None:
    with pytest.raises(InvalidInput):
        service._check_recipient(channel, recipient)


@pytest.mark.parametrize(
    ("fields", "channel", "message"),
    [
        ({}, "sms", "no phone on file"),
        ({"phone": "+447700900123"}, "sms", "has not enabled sms"),
        ({"push_token": "tok-12345678"}, "push", "has not enabled push"),
    ],
)
def test_a_user_is_reached_on_sms_or_push_only_if_possible_and_wanted(
    fields: dict[str, Any], channel: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        service._recipient_of(user(**fields), channel)
    assert raised.value.errors is not None
    assert message in raised.value.errors[0]["message"]


def test_email_reaches_a_user_whatever_the_preferences() -> None:
    assert service._recipient_of(user(notification_preferences={}), "email") == "ada@example.com"


async def test_an_unknown_user_is_invalid_input(renderer: TemplateRenderer, rows: FakeNotifications) -> None:
    with pytest.raises(InvalidInput, match="validation"):
        await service.send(deps(renderer), ADMIN, send_in(user_id=str(uuid.uuid4())), trace_id=None)


async def test_when_the_queue_refuses_the_row_says_so_and_the_admin_gets_503(
    renderer: TemplateRenderer, rows: FakeNotifications
) -> None:
    context = sample_context(renderer)
    with pytest.raises(DependencyUnavailable):
        await service.send(
            deps(renderer, queue=FakeQueue(fails=True)),
            ADMIN,
            send_in(recipient="ada@example.com", context=context),
            trace_id=None,
        )
    [notification_id] = rows.rows
    assert rows.unqueued[notification_id].startswith("could not be queued")


async def test_a_user_lists_only_their_own_notifications(
    renderer: TemplateRenderer, rows: FakeNotifications
) -> None:
    me = Caller(str(uuid.uuid4()), "user", "jti", "sid", 0, "t")
    await service.list_notifications(deps(renderer), me, ListQuery())
    assert rows.listed_for == [me.user_id]
    with pytest.raises(Forbidden):
        await service.list_notifications(deps(renderer), me, ListQuery(user_id=uuid.uuid4()))


async def test_an_admin_lists_everyones_or_one_users(
    renderer: TemplateRenderer, rows: FakeNotifications
) -> None:
    someone = uuid.uuid4()
    await service.list_notifications(deps(renderer), ADMIN, ListQuery())
    await service.list_notifications(deps(renderer), ADMIN, ListQuery(user_id=someone))
    assert rows.listed_for == [None, str(someone)]
