"""The e-mail's wire form: our short cut for headers writes what compat32 writes (issue 11)."""

from __future__ import annotations

import email
import io
import random
from email.generator import BytesGenerator
from email.policy import compat32

import pytest

from notifier.channels import Outgoing
from notifier.channels.email import WIRE_POLICY, build_email
from notifier.templates import Rendered

COMPAT32 = compat32.clone(linesep="\r\n")
ASCII = "".join(chr(code) for code in range(128) if chr(code) not in "\r\n")
PRINTABLE = "".join(chr(code) for code in range(32, 127))
NAMES = ("Subject", "To", "From", "Message-ID", "X-Notification-Id", "traceparent")


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
    outgoing = Outgoing(
        notification_id="6f1c1c44-3f44-4a9c-9e0f-6a9b1d9a1b11",
        recipient="ada@example.com",
        recipient_name=name,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        content=Rendered(
            template="order.created",
            channel="email",
            parts={"subject": subject, "text": "Hello\nthere", "html": "<p>Hello</p>"},
        ),
    )
    built = build_email(outgoing, mail_from="Shop <noreply@example.com>", domain="example.com")
    parsed = email.message_from_bytes(built.data, policy=COMPAT32)
    assert parsed.is_multipart()
    rewritten = {}
    for label, policy in (("ours", WIRE_POLICY), ("compat32", COMPAT32)):
        with io.BytesIO() as wire:
            BytesGenerator(wire, policy=policy).flatten(parsed)
            rewritten[label] = wire.getvalue()
    assert rewritten["ours"] == rewritten["compat32"] == built.data
