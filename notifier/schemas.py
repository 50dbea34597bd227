"""Request and response bodies of the notification API."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from common.openapi import Models
from common.pagination import Page, PageQuery
from common.validation import INPUT_CONFIG, WHITESPACE, Strip, whole_number
from notifier.templates import TEMPLATE_NAME_RE

Channel = Literal["email", "sms", "push"]
Status = Literal["queued", "sending", "sent", "failed", "dead", "held"]
Outcome = Literal["sent", "transient_error", "permanent_error", "interrupted", "held"]
Resendable = Literal["failed", "dead"]
MAX_BULK_RESEND = 1000
TemplateName = Annotated[str, StringConstraints(max_length=100, pattern=TEMPLATE_NAME_RE.pattern), Strip]
# Not only white space (stripped after validation); the channel decides what it must be.
Recipient = Annotated[
    str,
    StringConstraints(min_length=1, max_length=4096, pattern=rf"^[^\x00]*[^{WHITESPACE}\x00][^\x00]*$"),
    Strip,
]


def _in_utc_range(value: datetime) -> datetime:
    # 9999-12-31T23:59-14:00 is a valid time that no datetime can hold in UTC: the database
    # driver would raise OverflowError (a 500) while converting it, so it is the caller's 422.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


def _date_time_text(value: object) -> object:
    # The schema says an RFC 3339 string; pydantic alone would also take 0 as 1970-01-01 (a number).
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string")
    return value


ResendTime = Annotated[AwareDatetime, BeforeValidator(_date_time_text), AfterValidator(_in_utc_range)]
E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
PUSH_TOKEN_RE = re.compile(r"^\S{8,4096}$")


class ListQuery(PageQuery):
    status: Status | None = None
    channel: Channel | None = None
    # Admins only: whose notifications (a user always sees just their own).
    user_id: uuid.UUID | None = None


class SendIn(BaseModel):
    model_config = INPUT_CONFIG

    channel: Channel
    template: TemplateName
    user_id: uuid.UUID | None = None
    recipient: Recipient | None = None
    context: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _someone_to_send_to(self) -> SendIn:
        if self.user_id is None and self.recipient is None:
            raise ValueError("give user_id, recipient, or both")
        return self


class ResendMatching(BaseModel):
    """Resend every failed/dead notification that matches; the oldest first, at most ``limit``."""

    # JSON Schema cannot compare two fields: x-ordered says created_from < created_to (a 422
    # otherwise), and the fuzzer's hooks keep to it (tests/fuzz_hooks.py).
    model_config = ConfigDict(**INPUT_CONFIG, json_schema_extra={"x-ordered": ["created_from", "created_to"]})

    status: Annotated[list[Resendable], Field(min_length=1, max_length=2)]
    template: TemplateName | None = None
    channel: Channel | None = None
    created_from: ResendTime | None = None
    created_to: ResendTime | None = None
    # Strict: "5" is not a limit and "yes" not a boolean, as the schema says (JSON types as sent);
    # 5.0 is one, as JSON Schema's "integer" says.
    limit: Annotated[StrictInt, BeforeValidator(whole_number)] = Field(default=100, ge=1, le=MAX_BULK_RESEND)
    dry_run: StrictBool = False

    @model_validator(mode="after")
    def _range_in_order(self) -> ResendMatching:
        if self.created_from and self.created_to and self.created_from >= self.created_to:
            raise ValueError("created_from must be before created_to")
        return self


class ResendResult(BaseModel):
    dry_run: bool
    count: int
    ids: list[str]


class AttemptOut(BaseModel):
    attempt: int
    started_at: datetime
    finished_at: datetime
    outcome: Outcome
    error: str | None
    provider_message_id: str | None


class NotificationOut(BaseModel):
    id: str
    channel: Channel
    template: str
    event_type: str | None
    event_id: str | None
    user_id: str | None
    recipient: str
    status: Status
    attempts: int
    last_error: str | None
    provider_message_id: str | None
    trace_id: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    resends: int
    resent_at: datetime | None

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> NotificationOut:
        return cls.model_validate({name: row[name] for name in cls.model_fields})


class NotificationDetail(NotificationOut):
    attempt_log: list[AttemptOut]


class NotificationPage(Page[NotificationOut]):
    pass


OPENAPI_MODELS = Models(
    inputs=[SendIn, ResendMatching],
    outputs=[NotificationOut, NotificationDetail, NotificationPage, ResendResult],
)
