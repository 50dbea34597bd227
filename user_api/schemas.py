"""Request and response bodies of user_api."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from common.openapi import Models
from common.pagination import Page
from common.validation import INPUT_CONFIG, WHITESPACE, Strip, text, words_except

# bcrypt only looks at the first 72 bytes (and bcrypt 5 refuses more): limits are in bytes.
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_BYTES = 72
E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")


def _password_bytes(value: str) -> str:
    # The floor counts characters (as the OpenAPI minLength does), the ceiling bcrypt's bytes.
    if len(value.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise ValueError(f"must be at most {PASSWORD_MAX_BYTES} bytes in UTF-8")
    return value


def _compact_phone(value: str) -> str:
    return re.sub(_SEP, "", value)


# +447700900123 with any spaces, dots, dashes or brackets between the digits (compacted after
# validation): the same rule as E164_RE on the compact form, said as one pattern.
_SEP = rf"[{WHITESPACE}().-]"
PHONE_PATTERN = rf"^{_SEP}*\+{_SEP}*[1-9](?:{_SEP}*[0-9]){{6,14}}{_SEP}*$"

# An email address as a pattern, so the document says exactly which are accepted: a dot-atom
# local part of at most 64 characters and three dots, up to five labels without "--", and a
# top-level domain of letters that email-validator does not refuse as special-use; white space
# around it is dropped. Every address it matches also passes email-validator
# (service.normalise_email), which tests/integration/user_api/test_openapi.py checks.
SPECIAL_USE_TLDS = ("arpa", "invalid", "local", "localhost", "onion", "test")
_ATOM = "[A-Za-z0-9_%+-]"
_LOCAL = (
    rf"(?:{_ATOM}{{1,64}}|{_ATOM}{{1,32}}\.{_ATOM}{{1,31}}|{_ATOM}{{1,21}}(?:\.{_ATOM}{{1,20}}){{2}}"
    rf"|{_ATOM}{{1,16}}(?:\.{_ATOM}{{1,15}}){{3}})"
)
_LABEL = r"[A-Za-z0-9]{1,20}(?:-[A-Za-z0-9]{1,20}){0,2}"
_TLD = words_except(SPECIAL_USE_TLDS, min_length=2, max_length=24)
EMAIL_PATTERN = rf"^[ \t]*{_LOCAL}@(?:{_LABEL}\.){{1,4}}{_TLD}[ \t]*$"
Email = Annotated[
    str,
    StringConstraints(max_length=254, pattern=EMAIL_PATTERN),
    Strip,
    Field(description="An email address such as ada@example.com (ASCII; see the pattern)"),
]

Password = Annotated[
    str,
    StringConstraints(min_length=PASSWORD_MIN_CHARS, max_length=PASSWORD_MAX_BYTES),
    AfterValidator(_password_bytes),
    # JSON Schema counts characters; the bytes limit is said by this extension (and the fuzzer's
    # hooks keep to it: tests/fuzz_hooks.py).
    Field(json_schema_extra={"x-max-utf8-bytes": PASSWORD_MAX_BYTES}),
]
Phone = Annotated[
    str, StringConstraints(pattern=PHONE_PATTERN, max_length=64), AfterValidator(_compact_phone)
]
Name = Annotated[str, text(100), Strip]
PushToken = Annotated[
    str, StringConstraints(min_length=8, max_length=4096, pattern=rf"^[^{WHITESPACE}\x00-\x1f\x7f]+$"), Strip
]


class Strict(BaseModel):
    # strict: JSON types are taken as sent (0 is not false, "1" is not 1); unknown fields are refused.
    model_config = ConfigDict(**INPUT_CONFIG, strict=True)


class Preferences(Strict):
    email: bool = True
    sms: bool = False
    push: bool = False


class PreferencesPatch(Strict):
    email: bool | None = None
    sms: bool | None = None
    push: bool | None = None


class RegisterIn(Strict):
    email: Email
    password: Password
    name: Name
    phone: Phone | None = None
    notification_preferences: Preferences = Field(default_factory=Preferences)


class LoginIn(Strict):
    email: Annotated[str, StringConstraints(min_length=1, max_length=320)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class RefreshIn(Strict):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class LogoutIn(Strict):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None


class UserUpdateIn(Strict):
    """Partial update: absent fields stay as they are; ``null`` clears phone or push token."""

    # Absent means unchanged (None, unvalidated default); null is not a name, an email or a
    # role: 422, as the schema says. The service reads only the fields sent (model_fields_set).
    name: Name = None  # type: ignore[assignment]
    email: Email = None  # type: ignore[assignment]
    phone: Phone | None = None
    push_token: PushToken | None = None
    notification_preferences: PreferencesPatch | None = None
    password: Password | None = None
    current_password: Annotated[str, StringConstraints(max_length=1024)] | None = None
    role: Literal["user", "admin"] = None  # type: ignore[assignment]


class UserOut(BaseModel):
    id: str
    email: str
    name: str
    phone: str | None
    role: str
    notification_preferences: Preferences
    push_token: str | None
    created_at: datetime
    updated_at: datetime


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a scheme name, not a secret
    expires_in: int
    user: UserOut


class UserPage(Page[UserOut]):
    pass


OPENAPI_MODELS = Models(
    inputs=[RegisterIn, LoginIn, RefreshIn, LogoutIn, UserUpdateIn],
    outputs=[UserOut, TokensOut, UserPage],
)
