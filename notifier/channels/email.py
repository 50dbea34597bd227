"""Email over SMTP with aiosmtplib; the message itself is built by ``notifier.channels.mime``.

The Message-ID ``<notification-id@domain>`` is the same on every attempt, so if a worker dies
after the server accepted a message but before we recorded it, the second copy carries the same
id and mail systems (and people) can tell it is a duplicate.
"""

from __future__ import annotations

import asyncio
from email.utils import parseaddr

import aiosmtplib
from opentelemetry.trace import SpanKind

from common.tracing import tracer
from notifier.channels import Outgoing, PermanentFailure, TransientFailure, describe
from notifier.channels.mime import BuiltEmail, build_email
from notifier.settings import DeliverySettings

# Replies that mean "fix the configuration", not "this message is bad": retrying (and, once the
# retries run out, the dead-letter queue and a replay) is the way back, not dropping the mail.
CONFIGURATION_CODES = frozenset({530, 534, 535, 538})
# SMTP sessions kept open per sender (one sender per worker process): a new session around each
# message costs a TCP connect, EHLO (STARTTLS, AUTH) and QUIT. A session carries one mail
# transaction at a time, so concurrent sends use up to this many sessions.
MAX_SESSIONS = 4


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
