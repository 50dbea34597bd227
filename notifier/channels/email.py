"""Email over SMTP with aiosmtplib: text and HTML parts, one stable Message-ID per notification.

The Message-ID ``<notification-id@domain>`` is the same on every attempt, so if a worker dies
after the server accepted a message but before we recorded it, the second copy carries the same
id and mail systems (and people) can tell it is a duplicate.
"""

from __future__ import annotations

import asyncio
import io
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

import aiosmtplib
from opentelemetry.trace import SpanKind

from common.tracing import tracer, w3c_context
from notifier.channels import Outgoing, PermanentFailure, TransientFailure, describe
from notifier.settings import DeliverySettings
from notifier.templates import single_line

# Replies that mean "fix the configuration", not "this message is bad": retrying (and, once the
# retries run out, the dead-letter queue and a replay) is the way back, not dropping the mail.
CONFIGURATION_CODES = frozenset({530, 534, 535, 538})
# SMTP sessions kept open per sender (one sender per worker process): a new session around each
# message costs a TCP connect, EHLO (STARTTLS, AUTH) and QUIT. A session carries one mail
# transaction at a time, so concurrent sends use up to this many sessions.
MAX_SESSIONS = 4


def message_id_for(notification_id: str, domain: str) -> str:
    return f"<{notification_id}@{domain}>"


# The message is built with the email package's compat32 classes, not EmailMessage: the default
# policy parses every header value through its header registry, which made building an email
# most of a delivery's CPU time (issue 11). Non-ASCII text is quoted-printable UTF-8, headers
# RFC 2047 encoded words; the wire form (CRLF) is flattened once and handed to SMTP as bytes.
UTF8_QP = Charset("utf-8")
UTF8_QP.header_encoding = QP
UTF8_QP.body_encoding = QP


class _WirePolicy(type(compat32)):  # type: ignore[misc]  # compat32's class, not importable publicly
    """compat32 with a short cut: a header that fits on its line, printable ASCII, is written as is.

    compat32 sends every header through ``email.header.Header``, which hands such a header back
    unchanged; going through it was half of building an e-mail (issue 11). Anything else (a long
    value to fold, a non-ASCII one) takes compat32's way. ``tests/unit/test_email_wire.py``
    compares both ways byte for byte.
    """

    def fold_binary(self, name: str, value: str) -> bytes:
        if (
            isinstance(value, str)
            and value.isascii()
            and value.isprintable()  # no control character: nothing Header would split a line at
            and len(name) + 2 + len(value) <= self.max_line_length
        ):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        folded: bytes = super().fold_binary(name, value)
        return folded


WIRE_POLICY = _WirePolicy(linesep="\r\n")
# RFC 5321: a line of at most 998 characters; a longer one goes quoted-printable (which wraps).
MAX_7BIT_LINE = 998


@dataclass(frozen=True)
class BuiltEmail:
    message_id: str
    data: bytes


def _header(text: str) -> str:
    return text if text.isascii() else Header(text, UTF8_QP).encode()


def _mailbox(name: str, address: str) -> str:
    return formataddr((name, address), charset="utf-8")


def _text_part(text: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype)
    if text.isascii() and all(len(line) <= MAX_7BIT_LINE for line in text.splitlines()):
        part.set_payload(text, "us-ascii")  # 7bit
    else:
        part.set_payload(text, UTF8_QP)
    return part


def build_email(outgoing: Outgoing, *, mail_from: str, domain: str) -> BuiltEmail:
    parts = outgoing.content.parts
    body: Message
    if "html" in parts:
        # A boundary of 128 random bits cannot occur in the parts by chance, and nobody can put it
        # there on purpose; without one, the generator makes its own and searches every part for
        # it with a freshly compiled pattern (issue 11: a tenth of the workers' CPU per e-mail).
        body = MIMEMultipart("alternative", boundary=f"=_{secrets.token_hex(16)}")
        body.attach(_text_part(parts["text"] + "\n", "plain"))
        body.attach(_text_part(parts["html"] + "\n", "html"))
    else:
        body = _text_part(parts["text"] + "\n", "plain")
    # Header values are passed through single_line: user data (a name, a subject built from an
    # order) can never smuggle a CR/LF and start a header of its own.
    name = single_line(outgoing.recipient_name or "")
    recipient = single_line(outgoing.recipient)
    try:
        Address(display_name=name, addr_spec=recipient)  # the address check, nothing else
    except (ValueError, IndexError) as exc:
        raise PermanentFailure(f"invalid email address {outgoing.recipient!r}: {exc}") from None
    message_id = message_id_for(outgoing.notification_id, domain)
    body["Subject"] = _header(single_line(parts["subject"]))
    body["From"] = _mailbox(*parseaddr(single_line(mail_from)))
    body["To"] = _mailbox(name, recipient)
    body["Message-ID"] = message_id
    body["Date"] = formatdate(usegmt=True)
    body["Auto-Submitted"] = "auto-generated"
    body["X-Notification-Id"] = outgoing.notification_id
    if outgoing.trace_id:
        body["X-Trace-Id"] = single_line(outgoing.trace_id)
    # W3C Trace Context of the SMTP send (its span is current here): a mail system that traces
    # can continue it, and the message names the trace it belongs to.
    for header, value in w3c_context().items():
        body[header] = single_line(value)
    with io.BytesIO() as wire:
        BytesGenerator(wire, policy=WIRE_POLICY).flatten(body)
        return BuiltEmail(message_id, wire.getvalue())


def _classify(exc: aiosmtplib.SMTPException) -> TransientFailure | PermanentFailure:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients) or describe(exc)
        if codes and all(500 <= code < 600 for code in codes):
            return PermanentFailure(f"SMTP recipient refused: {detail}")
        return TransientFailure(f"SMTP recipient deferred: {detail}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        detail = f"SMTP {exc.code} {exc.message}"
        if 500 <= exc.code < 600 and exc.code not in CONFIGURATION_CODES:
            return PermanentFailure(detail)
        return TransientFailure(detail)
    # Disconnects, timeouts, connection refused, missing STARTTLS support: try again later.
    return TransientFailure(f"SMTP: {describe(exc)}")


class EmailSender:
    def __init__(self, settings: DeliverySettings) -> None:
        self._settings = settings
        _, self._envelope_from = parseaddr(settings.mail_from)
        self._idle: list[aiosmtplib.SMTP] = []
        self._sessions = asyncio.Semaphore(MAX_SESSIONS)

    def _new_session(self) -> aiosmtplib.SMTP:
        settings = self._settings
        return aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username or None,
            password=settings.smtp_password or None,
            use_tls=settings.smtp_use_tls,
            start_tls=settings.smtp_starttls,
            validate_certs=settings.smtp_validate_certs,
            timeout=settings.smtp_timeout_s,
        )

    async def _transmit(self, message: BuiltEmail, recipient: str) -> None:
        async with self._sessions:
            smtp = self._idle.pop() if self._idle else None
            if smtp is not None and not smtp.is_connected:
                smtp = None
            if smtp is not None:
                try:
                    await smtp.sendmail(self._envelope_from, [recipient], message.data)
                except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                    # The server dropped the idle session (its timeout, a restart): once more on a
                    # fresh one. Had it accepted the message first, the copy has the same Message-ID.
                    smtp.close()
                except BaseException:
                    smtp.close()  # a session in an unknown state is not reused
                    raise
                else:
                    self._idle.append(smtp)
                    return
            smtp = self._new_session()
            try:
                await smtp.connect()
                await smtp.sendmail(self._envelope_from, [recipient], message.data)
            except BaseException:
                smtp.close()
                raise
            self._idle.append(smtp)

    async def aclose(self) -> None:
        """End the idle sessions politely (QUIT); a process that just exits drops them as well."""
        idle, self._idle = self._idle, []
        for smtp in idle:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                smtp.close()

    async def send(self, outgoing: Outgoing) -> str | None:
        settings = self._settings
        with tracer().start_as_current_span(
            "smtp send",
            kind=SpanKind.CLIENT,
            attributes={"server.address": settings.smtp_host, "server.port": settings.smtp_port},
        ):
            # A failure (the exception raised) is recorded on the span and sets its error status.
            return await self._send(outgoing)

    async def _send(self, outgoing: Outgoing) -> str | None:
        settings = self._settings
        message = build_email(outgoing, mail_from=settings.mail_from, domain=settings.message_id_domain)
        try:
            await self._transmit(message, outgoing.recipient)
        except aiosmtplib.SMTPException as exc:
            raise _classify(exc) from exc
        except (OSError, TimeoutError) as exc:
            raise TransientFailure(f"SMTP: {describe(exc)}") from exc
        return message.message_id
