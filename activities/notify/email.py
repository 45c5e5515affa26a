"""EmailNotifier: each message as one plain-text e-mail over SMTP, the channel the spec names."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage

from temporalio.exceptions import ApplicationError

from activities.notify.messages import Message


@dataclass
class EmailNotifier:
    """Sends through the SMTP server at `host`:`port` (PATCHPILOT_SMTP_HOST / _PORT) as `sender`,
    upgrading with STARTTLS (system CA store) when `starttls`, logging in when both `username` and
    `password` are given; `timeout` is seconds per SMTP connection.

    Each e-mail carries `X-PatchPilot-Rollout` and `X-PatchPilot-Event` headers for mail filters.
    A message without recipients is not sent (False). An SMTP or network error raises a retryable
    ApplicationError of type "SmtpError": the notification activity's retry policy backs off and
    tries again.
    """

    host: str
    port: int = 25
    sender: str = "patchpilot@localhost"
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 15.0
    name: str = "email"

    def _send_blocking(self, message: Message) -> None:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = ", ".join(message.recipients)
        email["Subject"] = message.subject
        email["X-PatchPilot-Rollout"] = message.notice.rollout_id
        email["X-PatchPilot-Event"] = message.event
        email.set_content(message.body)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username and self.password:
                smtp.login(self.username, self.password)
            smtp.send_message(email)

    def wants(self, message: Message) -> bool:
        return bool(message.recipients)

    async def send(self, message: Message) -> bool:
        if not self.wants(message):
            return False
        try:
            await asyncio.to_thread(self._send_blocking, message)
        except (OSError, smtplib.SMTPException) as error:
            raise ApplicationError(
                f"SMTP {self.host}:{self.port} failed: {error}", type="SmtpError"
            ) from None
        return True
