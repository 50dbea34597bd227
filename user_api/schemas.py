"""Request and response bodies of user_api."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

# bcrypt only looks at the first 72 bytes (and bcrypt 5 refuses more): limits are in bytes.
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_BYTES = 72
E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")


def _password_bytes(value: str) -> str:
    size = len(value.encode("utf-8"))
    # The floor counts characters (as the OpenAPI minLength does), the ceiling bcrypt's bytes.
    if len(value) < PASSWORD_MIN_CHARS:
        raise ValueError(f"must be at least {PASSWORD_MIN_CHARS} characters")
    if size > PASSWORD_MAX_BYTES:
        raise ValueError(f"must be at most {PASSWORD_MAX_BYTES} bytes in UTF-8")
    return value


def _phone(value: str) -> str:
    compact = re.sub(r"[\s().-]", "", value)
    if not E164_RE.match(compact):
        raise ValueError("must be an international number such as +447700900123")
    return compact


def _no_control_chars(value: str) -> str:
    # Names end up in email headers and templates; control characters have no business there.
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    return value


Password = Annotated[str, AfterValidator(_password_bytes)]
Phone = Annotated[str, AfterValidator(_phone)]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_no_control_chars),
]
PushToken = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=8, max_length=4096, pattern=r"^\S+$")
]


class Strict(BaseModel):
    # strict: JSON types are taken as sent (0 is not false, "1" is not 1); unknown fields are refused.
    model_config = ConfigDict(extra="forbid", str_max_length=4096, strict=True)


class Preferences(Strict):
    email: bool = True
    sms: bool = False
    push: bool = False


class PreferencesPatch(Strict):
    email: bool | None = None
    sms: bool | None = None
    push: bool | None = None


class RegisterIn(Strict):
    email: EmailStr
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

    name: Name | None = None
    email: EmailStr | None = None
    phone: Phone | None = None
    push_token: PushToken | None = None
    notification_preferences: PreferencesPatch | None = None
    password: Password | None = None
    current_password: Annotated[str, StringConstraints(max_length=1024)] | None = None
    role: Literal["user", "admin"] | None = None


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
