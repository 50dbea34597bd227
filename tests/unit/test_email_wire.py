"""The e-mail's wire form: our short cuts write what the email package writes (issue 11)."""

from __future__ import annotations

import email
import io
import random
from email.generator import BytesGenerator
from email.policy import compat32

import pytest

from notifier.channels import Outgoing, PermanentFailure
from notifier.channels.mime import (
    WIRE_POLICY,
    Draft,
    build_email,
    draft_email,
    write_plain,
    write_with_email_package,
)
from notifier.templates import Rendered

COMPAT32 = compat32.clone(linesep="\r\n")
ASCII = "".join(chr(code) for code in range(128) if chr(code) not in "\r\n")
PRINTABLE = "".join(chr(code) for code in range(32, 127))
NAMES = ("Subject", "To", "From", "Message-ID", "X-Notification-Id", "traceparent")
MAIL_FROM = "Shop <noreply@example.com>"


def outgoing_email(
    parts: dict[str, str],
    *,
    name: str = "Ada",
    recipient: str = "ada@example.com",
    trace_id: str | None = "4bf92f3577b34da6a3ce929d0e0e4736",
) -> Outgoing:
    return Outgoing(
        notification_id="6f1c1c44-3f44-4a9c-9e0f-6a9b1d9a1b11",
        recipient=recipient,
        recipient_name=name,
        trace_id=trace_id,
        content=Rendered(template="order.created", channel="email", parts=parts),
    )


def build(outgoing: Outgoing) -> bytes:
    return build_email(outgoing, mail_from=MAIL_FROM, domain="example.com").data


def folded(policy: object, name: str, value: str) -> bytes | str:
    try:
        return policy.fold_binary(name, value)  # type: ignore[attr-defined, no-any-return]
    except Exception as exc:  # the same failure counts as the same result
        return repr(exc)


@pytest.mark.parametrize("alphabet", [PRINTABLE, ASCII, PRINTABLE + "äé€😀"])
def test_every_header_is_folded_as_compat32_folds_it(alphabet: str) -> None:
    chooser = random.Random(11)
    for _ in range(20_000):
        name = chooser.choice(NAMES)
        value = "".join(chooser.choice(alphabet) for _ in range(chooser.randint(0, 100)))
        assert folded(WIRE_POLICY, name, value) == folded(COMPAT32, name, value), (name, value)


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("Ada Lovelace", "Order 1234 received"),
        ("Zoë Ünal", "Bestellung für Zoë: 12,00 €"),
        ("Bob", "A subject long enough to be folded over more than one line " * 3),
    ],
)
def test_a_whole_message_is_written_as_compat32_writes_it(name: str, subject: str) -> None:
    data = build(
        outgoing_email({"subject": subject, "text": "Hello\nthere", "html": "<p>Hello</p>"}, name=name)
    )
    parsed = email.message_from_bytes(data, policy=COMPAT32)
    assert parsed.is_multipart()
    rewritten = {}
    for label, policy in (("ours", WIRE_POLICY), ("compat32", COMPAT32)):
        with io.BytesIO() as wire:
            BytesGenerator(wire, policy=policy).flatten(parsed)
            rewritten[label] = wire.getvalue()
    assert rewritten["ours"] == rewritten["compat32"] == data


def _random_text(chooser: random.Random, alphabet: str, longest: int) -> str:
    return "".join(chooser.choice(alphabet) for _ in range(chooser.randint(0, longest)))


@pytest.mark.parametrize("with_html", [True, False])
def test_a_plain_message_is_written_directly_as_the_email_package_writes_it(with_html: bool) -> None:
    chooser = random.Random(7)
    # Printable ASCII and every kind of line end, lines up to the 7bit limit and a few beyond it.
    body_alphabet = PRINTABLE + "\n\n\r\t"
    for _ in range(2_000):
        headers = [
            (name, _random_text(chooser, PRINTABLE, 78 - len(name) - 2))
            for name in ("Subject", "From", "To", "Message-ID", "Date", "X-Notification-Id")
        ]
        parts = [("plain", _random_text(chooser, body_alphabet, 300) + "\n")]
        if with_html:
            parts.append(("html", _random_text(chooser, body_alphabet, 300) + "\n"))
        draft = Draft("<id@example.com>", headers, parts, f"=_{chooser.getrandbits(128):032x}")
        assert write_plain(draft) == write_with_email_package(draft), draft


def test_a_line_of_998_characters_is_7bit_and_a_longer_one_is_not() -> None:
    assert b"Content-Transfer-Encoding: 7bit" in build(outgoing_email({"subject": "s", "text": "x" * 998}))
    longer = build(outgoing_email({"subject": "s", "text": "x" * 999}))
    assert b"Content-Transfer-Encoding: quoted-printable" in longer


@pytest.mark.parametrize(
    ("name", "subject", "text"),
    [
        ("Ada Lovelace", "Order 1234 received", "Hello\nthere"),
        ("Zoë Ünal", "Order 1234 received", "Hello"),
        ("Ada", "Bestellung für Zoë: 12,00 €", "Hello"),
        ("Ada", "Order 1234 received", "Grüße"),
        ("Ada, Countess of Lovelace", "Order received", "Hello"),
        ("Bob", "A subject long enough to be folded over more than one line " * 3, "Hello"),
    ],
)
def test_whichever_way_a_message_takes_it_is_the_email_packages_message(
    name: str, subject: str, text: str
) -> None:
    outgoing = outgoing_email({"subject": subject, "text": text, "html": "<p/>"}, name=name)
    draft = draft_email(outgoing, mail_from=MAIL_FROM, domain="example.com")
    data = build(outgoing)
    # Date and boundary differ from one build to the next; the rest is the email package's.
    expected = write_with_email_package(draft)
    parsed, ours = (email.message_from_bytes(wire, policy=COMPAT32) for wire in (expected, data))
    assert [(k, v) for k, v in ours.items() if k not in ("Date", "Content-Type")] == [
        (k, v) for k, v in parsed.items() if k not in ("Date", "Content-Type")
    ]
    assert [p.get_payload() for p in ours.get_payload()] == [p.get_payload() for p in parsed.get_payload()]


def test_an_invalid_address_is_a_permanent_failure_every_time() -> None:
    outgoing = outgoing_email({"subject": "s", "text": "t"}, recipient="not an address@")
    for _ in range(2):  # the check's cache keeps what passed, never what failed
        with pytest.raises(PermanentFailure, match="invalid email address"):
            build(outgoing)
