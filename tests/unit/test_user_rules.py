"""user_api's rules: email normalisation, password limits, profile and role changes (user_api.service)."""

from __future__ import annotations

import uuid
from typing import Any, cast

import bcrypt
import pytest
from pydantic import ValidationError

from common.errors import Conflict, Forbidden, InvalidInput, NotFound
from common.events import USER_REGISTERED
from common.jwt import Caller
from tests.unit.fakes import FakePool, FakeRedis, FakeTokens, FakeUserRepository, install
from user_api import repository, service
from user_api.schemas import PASSWORD_MAX_BYTES, RegisterIn, UserUpdateIn
from user_api.settings import Settings

PASSWORD = "correct horse battery"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


def caller(user_id: str, role: str = "user") -> Caller:
    return Caller(user_id, role, "jti", "sid", 0, "token")


@pytest.fixture
def users(monkeypatch: pytest.MonkeyPatch) -> FakeUserRepository:
    fake = FakeUserRepository()
    install(monkeypatch, repository, fake)
    return fake


@pytest.fixture
def tokens() -> FakeTokens:
    return FakeTokens()


@pytest.fixture
def deps(pool: FakePool, tokens: FakeTokens, redis: FakeRedis) -> service.Deps:
    settings = Settings(app_env="test", bcrypt_rounds=4)
    return service.Deps(cast(Any, pool), cast(Any, redis), cast(Any, tokens), settings, HASH.encode())


def update(**fields: Any) -> UserUpdateIn:
    return UserUpdateIn.model_validate(fields)


# --- email and password ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [("Ada@Example.COM", "ada@example.com"), ("  ada@example.com\t", "ada@example.com")],
)
def test_an_email_is_stored_in_one_form(given: str, stored: str) -> None:
    assert service.normalise_email(given) == stored


@pytest.mark.parametrize("email", ["ada", "ada@", "@example.com", "ada@example", "a b@example.com"])
def test_an_invalid_email_is_invalid_input_on_the_email_field(email: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        service.normalise_email(email)
    assert raised.value.errors == [{"field": "email", "message": "invalid"}]


def register(**fields: Any) -> RegisterIn:
    return RegisterIn.model_validate(
        {"email": "ada@example.com", "password": PASSWORD, "name": "Ada", **fields}
    )


def test_a_password_needs_eight_characters() -> None:
    with pytest.raises(ValidationError):
        register(password="seven77")
    assert register(password="eight888").password == "eight888"


def test_the_password_ceiling_counts_utf8_bytes_not_characters() -> None:
    assert register(password="x" * PASSWORD_MAX_BYTES).password
    with pytest.raises(ValidationError, match="bytes"):
        register(password="é" * 37)  # 37 characters, 74 bytes
    assert register(password="é" * 36).password


def test_a_phone_is_stored_compact() -> None:
    assert register(phone="+44 (7700) 900-123").phone == "+447700900123"


@pytest.mark.parametrize("phone", ["07700900123", "+0123456789", "+12"])
def test_a_phone_must_be_international(phone: str) -> None:
    with pytest.raises(ValidationError):
        register(phone=phone)


def test_strict_types_are_taken_as_sent() -> None:
    with pytest.raises(ValidationError):
        register(notification_preferences={"email": 1})
    with pytest.raises(ValidationError):
        register(role="admin")  # unknown field: registration never chooses a role


async def test_a_password_over_the_bcrypt_limit_never_matches() -> None:
    long_password = "x" * (PASSWORD_MAX_BYTES + 1)
    hashed = bcrypt.hashpw(long_password[:PASSWORD_MAX_BYTES].encode(), bcrypt.gensalt(4))
    assert await service.check_password(long_password[:PASSWORD_MAX_BYTES], hashed)
    assert not await service.check_password(long_password, hashed)


# --- registration ----------------------------------------------------------------------------


async def test_registering_stores_a_bcrypt_hash_and_writes_user_registered_with_the_contact(
    deps: service.Deps, users: FakeUserRepository, pool: FakePool
) -> None:
    user = await service.register(deps, register(email="Ada@Example.com", phone="+447700900123"))
    stored = users.users[user.id]
    assert stored["email"] == "ada@example.com"
    assert bcrypt.checkpw(PASSWORD.encode(), stored["password_hash"].encode())
    assert user.role == "user"
    [event] = pool.conn.events
    assert event["event_type"] == USER_REGISTERED
    assert event["data"]["user"]["email"] == "ada@example.com"
    assert event["data"]["user"]["phone"] == "+447700900123"
    assert "password_hash" not in event["data"]["user"]


async def test_a_taken_email_is_conflict_and_no_event_is_written(
    deps: service.Deps, users: FakeUserRepository, pool: FakePool
) -> None:
    users.add(email="ada@example.com")
    with pytest.raises(Conflict):
        await service.register(deps, register(email="ADA@example.com"))
    assert pool.conn.events == []


async def test_create_admin_promotes_an_existing_account_and_sets_its_password(
    deps: service.Deps, users: FakeUserRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id = users.add(email="ops@example.com")

    async def set_role_and_password(db: Any, wanted: str, *, role: str, password_hash: str) -> dict[str, Any]:
        users.users[wanted].update(role=role, password_hash=password_hash)
        return users.users[wanted]

    monkeypatch.setattr(repository, "set_role_and_password", set_role_and_password)
    admin, created = await service.create_admin(deps, "Ops@Example.com", "a new admin pass", "Ops")
    assert (admin.id, admin.role, created) == (user_id, "admin", False)
    assert bcrypt.checkpw(b"a new admin pass", users.users[user_id]["password_hash"].encode())


# --- profile changes -------------------------------------------------------------------------


async def test_a_user_may_not_change_their_own_role(
    deps: service.Deps, users: FakeUserRepository, tokens: FakeTokens
) -> None:
    user_id = users.add()
    with pytest.raises(Forbidden, match="only an admin"):
        await service.update_user(deps, caller(user_id), user_id, update(role="admin"))
    assert users.users[user_id]["role"] == "user"
    assert tokens.revoked_all == []


async def test_sending_ones_current_role_is_not_a_change(
    deps: service.Deps, users: FakeUserRepository
) -> None:
    user_id = users.add()
    updated = await service.update_user(deps, caller(user_id), user_id, update(role="user", name="Ada L."))
    assert updated.name == "Ada L."
    assert updated.role == "user"


async def test_an_admin_promotes_and_the_users_sessions_end(
    deps: service.Deps, users: FakeUserRepository, tokens: FakeTokens, redis: FakeRedis
) -> None:
    user_id = users.add()
    redis.data[f"cache:user:{user_id}"] = "{}"
    updated = await service.update_user(
        deps, caller(str(uuid.uuid4()), "admin"), user_id, update(role="admin")
    )
    assert updated.role == "admin"
    assert tokens.revoked_all == [user_id]  # live tokens carry the old role
    assert f"cache:user:{user_id}" not in redis.data


async def test_another_users_profile_is_not_found(deps: service.Deps, users: FakeUserRepository) -> None:
    user_id = users.add()
    with pytest.raises(NotFound):
        await service.update_user(deps, caller(str(uuid.uuid4())), user_id, update(name="Mallory"))
    with pytest.raises(NotFound):
        await service.get_user(deps, caller(str(uuid.uuid4())), user_id)
    assert users.users[user_id]["name"] == "Ada Lovelace"


@pytest.mark.parametrize("field", ["name", "email"])
async def test_name_and_email_cannot_be_cleared(
    deps: service.Deps, users: FakeUserRepository, field: str
) -> None:
    user_id = users.add()
    body = UserUpdateIn.model_construct(**{field: None}, _fields_set={field})
    with pytest.raises(InvalidInput):
        await service.update_user(deps, caller(user_id), user_id, body)


async def test_a_changed_email_is_normalised(deps: service.Deps, users: FakeUserRepository) -> None:
    user_id = users.add()
    updated = await service.update_user(deps, caller(user_id), user_id, update(email="Ada.L@Example.com"))
    assert updated.email == "ada.l@example.com"


async def test_changing_ones_password_needs_the_current_one(
    deps: service.Deps, users: FakeUserRepository, tokens: FakeTokens
) -> None:
    user_id = users.add(password_hash=HASH)
    with pytest.raises(Forbidden):
        await service.update_user(deps, caller(user_id), user_id, update(password="new password 1"))
    with pytest.raises(Forbidden):
        await service.update_user(
            deps, caller(user_id), user_id, update(password="new password 1", current_password="wrong one")
        )
    assert tokens.revoked_all == []
    await service.update_user(
        deps, caller(user_id), user_id, update(password="new password 1", current_password=PASSWORD)
    )
    assert bcrypt.checkpw(b"new password 1", users.users[user_id]["password_hash"].encode())
    assert tokens.revoked_all == [user_id]


async def test_an_admin_resets_someone_elses_password_without_theirs(
    deps: service.Deps, users: FakeUserRepository
) -> None:
    user_id = users.add(password_hash=HASH)
    await service.update_user(
        deps, caller(str(uuid.uuid4()), "admin"), user_id, update(password="reset pass 1")
    )
    assert bcrypt.checkpw(b"reset pass 1", users.users[user_id]["password_hash"].encode())


async def test_preferences_change_only_the_channels_sent(
    deps: service.Deps, users: FakeUserRepository
) -> None:
    user_id = users.add()
    updated = await service.update_user(
        deps, caller(user_id), user_id, update(notification_preferences={"sms": True})
    )
    assert updated.notification_preferences.model_dump() == {"email": True, "sms": True, "push": False}


async def test_a_cached_profile_is_served_from_the_cache(
    deps: service.Deps, users: FakeUserRepository, redis: FakeRedis
) -> None:
    user_id = users.add()
    first = await service.get_user(deps, caller(user_id), user_id)
    users.users[user_id]["name"] = "Changed behind the cache"
    assert (await service.get_user(deps, caller(user_id), user_id)).name == first.name
    assert f"cache:user:{user_id}" in redis.data


async def test_deleting_a_user_ends_their_sessions(
    deps: service.Deps, users: FakeUserRepository, tokens: FakeTokens
) -> None:
    user_id = users.add()
    await service.delete_user(deps, caller(str(uuid.uuid4()), "admin"), user_id)
    assert user_id not in users.users
    assert tokens.revoked_all == [user_id]
    with pytest.raises(NotFound):
        await service.delete_user(deps, caller(str(uuid.uuid4()), "admin"), user_id)


def test_the_contact_copied_into_events_carries_no_secrets_or_role() -> None:
    row = FakeUserRepository()
    user_id = row.add(password_hash=HASH)
    contact = service.contact(service.user_out(cast(Any, row.users[user_id])))
    assert set(contact) == {"id", "email", "name", "phone", "notification_preferences", "push_token"}


@pytest.mark.parametrize("token", ["abcdefg\x00", "ab\x1fdefgh", "abc\x7fefgh", "abcd efgh", "abcdef\xa0h"])
def test_a_push_token_has_no_control_or_white_space_characters(token: str) -> None:
    # The document's pattern says so too (schemathesis sent a NUL that the schema allowed).
    with pytest.raises(ValidationError):
        UserUpdateIn.model_validate({"push_token": token})
    assert UserUpdateIn.model_validate({"push_token": "fcm:AbC-123_x/y+z="}).push_token
