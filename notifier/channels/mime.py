"""An e-mail's wire form: text and HTML parts, the headers delivery tracking needs.

The email package writes every message that needs its care (non-ASCII text, a header to fold or
encode, a line too long for 7bit). The common one, all ASCII and short lines, is written directly
in the very form the email package gives it: building through the package was a fifth of the
workers' CPU under load (issue 11). ``tests/unit/test_email_wire.py`` compares the two ways byte
for byte.
"""

from __future__ import annotations

import io
import re
import secrets
from dataclasses import dataclass
from email.charset import QP, Charset
from email.generator import BytesGenerator
from email.header import Header
from email.headerregistry import Address
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import compat32
from email.utils import formataddr, formatdate, parseaddr
from functools import lru_cache

from common.tracing import w3c_context
from notifier.channels import Outgoing, PermanentFailure
from notifier.templates import single_line

# The message is built with the email package's compat32 classes, not EmailMessage: the default
# policy parses every header value through its header registry, which made building an email
# most of a delivery's CPU time (issue 11). Non-ASCII text is quoted-printable UTF-8, headers
# RFC 2047 encoded words; the wire form (CRLF) is flattened once and handed to SMTP as bytes.
UTF8_QP = Charset("utf-8")
UTF8_QP.header_encoding = QP
UTF8_QP.body_encoding = QP
CRLF = "\r\n"
# How the email package's generator splits a payload into lines (email.generator.NLCRE).
LINE_BREAK = re.compile(r"\r\n|\r|\n")


class _WirePolicy(type(compat32)):  # type: ignore[misc]  # compat32's class, not importable publicly
    """compat32 with a short cut: a header that fits on its line, printable ASCII, is written as is.

    compat32 sends every header through ``email.header.Header``, which hands such a header back
    unchanged; going through it was half of building an e-mail (issue 11). Anything else (a long
    value to fold, a non-ASCII one) takes compat32's way. ``tests/unit/test_email_wire.py``
    compares both ways byte for byte.
    """

    def fold_binary(self, name: str, value: str) -> bytes:
        if _fits(name, value):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        folded: bytes = super().fold_binary(name, value)
        return folded


WIRE_POLICY = _WirePolicy(linesep=CRLF)
# RFC 5321: a line of at most 998 characters; a longer one goes quoted-printable (which wraps).
MAX_7BIT_LINE = 998


@dataclass(frozen=True)
class BuiltEmail:
    message_id: str
    data: bytes


@dataclass(frozen=True)
class Draft:
    """A message before its wire form: headers in order, text parts (subtype, text), a boundary."""

    message_id: str
    headers: list[tuple[str, str]]
    parts: list[tuple[str, str]]
    boundary: str


def message_id_for(notification_id: str, domain: str) -> str:
    return f"<{notification_id}@{domain}>"


def _fits(name: str, value: str) -> bool:
    return (
        isinstance(value, str)
        and value.isascii()
        and value.isprintable()  # no control character: nothing Header would split a line at
        and len(name) + 2 + len(value) <= WIRE_POLICY.max_line_length
    )


def _is_7bit(text: str) -> bool:
    return text.isascii() and all(len(line) <= MAX_7BIT_LINE for line in text.splitlines())


def _header(text: str) -> str:
    return text if text.isascii() else Header(text, UTF8_QP).encode()


def _mailbox(name: str, address: str) -> str:
    return formataddr((name, address), charset="utf-8")


@lru_cache(maxsize=64)
def _from_header(mail_from: str) -> str:
    return _mailbox(*parseaddr(single_line(mail_from)))


@lru_cache(maxsize=4096)
def _checked_mailbox(name: str, recipient: str) -> str:
    """The To header, once the address passed the email package's check (an order mails twice)."""
    try:
        Address(display_name=name, addr_spec=recipient)  # the address check, nothing else
    except (ValueError, IndexError) as exc:
        raise PermanentFailure(f"invalid email address {recipient!r}: {exc}") from None
    return _mailbox(name, recipient)


def draft_email(outgoing: Outgoing, *, mail_from: str, domain: str) -> Draft:
    parts = outgoing.content.parts
    texts = [("plain", parts["text"] + "\n")]
    if "html" in parts:
        texts.append(("html", parts["html"] + "\n"))
    # Header values are passed through single_line: user data (a name, a subject built from an
    # order) can never smuggle a CR/LF and start a header of its own.
    name = single_line(outgoing.recipient_name or "")
    message_id = message_id_for(outgoing.notification_id, domain)
    headers = [
        ("Subject", _header(single_line(parts["subject"]))),
        ("From", _from_header(mail_from)),
        ("To", _checked_mailbox(name, single_line(outgoing.recipient))),
        ("Message-ID", message_id),
        ("Date", formatdate(usegmt=True)),
        ("Auto-Submitted", "auto-generated"),
        ("X-Notification-Id", outgoing.notification_id),
    ]
    if outgoing.trace_id:
        headers.append(("X-Trace-Id", single_line(outgoing.trace_id)))
    # W3C Trace Context of the SMTP send (its span is current here): a mail system that traces
    # can continue it, and the message names the trace it belongs to.
    headers += [(header, single_line(value)) for header, value in w3c_context().items()]
    # A boundary of 128 random bits cannot occur in the parts by chance, and nobody can put it
    # there on purpose; without one, the generator makes its own and searches every part for it
    # with a freshly compiled pattern (issue 11: a tenth of the workers' CPU per e-mail).
    return Draft(message_id, headers, texts, f"=_{secrets.token_hex(16)}")


def build_email(outgoing: Outgoing, *, mail_from: str, domain: str) -> BuiltEmail:
    draft = draft_email(outgoing, mail_from=mail_from, domain=domain)
    plain = all(_fits(*header) for header in draft.headers) and all(_is_7bit(text) for _, text in draft.parts)
    data = write_plain(draft) if plain else write_with_email_package(draft)
    return BuiltEmail(draft.message_id, data)


def _text_part(text: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype)
    if _is_7bit(text):
        part.set_payload(text, "us-ascii")  # 7bit
    else:
        part.set_payload(text, UTF8_QP)
    return part


def write_with_email_package(draft: Draft) -> bytes:
    body: Message
    if len(draft.parts) > 1:
        body = MIMEMultipart("alternative", boundary=draft.boundary)
        for subtype, text in draft.parts:
            body.attach(_text_part(text, subtype))
    else:
        [(subtype, text)] = draft.parts
        body = _text_part(text, subtype)
    for name, value in draft.headers:
        body[name] = value
    with io.BytesIO() as wire:
        BytesGenerator(wire, policy=WIRE_POLICY).flatten(body)
        return wire.getvalue()


def _plain_part(subtype: str, text: str) -> tuple[str, str]:
    """A 7bit part's headers, and its text with CRLF line ends."""
    return (
        f'MIME-Version: 1.0{CRLF}Content-Type: text/{subtype}; charset="us-ascii"{CRLF}'
        f"Content-Transfer-Encoding: 7bit{CRLF}"
    ), CRLF.join(LINE_BREAK.split(text))


def write_plain(draft: Draft) -> bytes:
    """What ``write_with_email_package`` writes for ASCII headers that fit and 7bit parts."""
    headers = "".join(f"{name}: {value}{CRLF}" for name, value in draft.headers)
    if len(draft.parts) == 1:
        [(subtype, text)] = draft.parts
        part_headers, body = _plain_part(subtype, text)
        return f"{part_headers}{headers}{CRLF}{body}".encode("ascii")
    delimiter = f"--{draft.boundary}"
    wire = [
        f'Content-Type: multipart/alternative;{CRLF} boundary="{draft.boundary}"{CRLF}',
        f"MIME-Version: 1.0{CRLF}{headers}{CRLF}",
    ]
    for index, (subtype, text) in enumerate(draft.parts):
        part_headers, body = _plain_part(subtype, text)
        wire.append(f"{CRLF if index else ''}{delimiter}{CRLF}{part_headers}{CRLF}{body}")
    wire.append(f"{CRLF}{delimiter}--{CRLF}")
    return "".join(wire).encode("ascii")
