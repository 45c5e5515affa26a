"""The integration suite's real parts (Temporal dev server, OpenBao, sshd fleet, SMTP server)."""

from tests.integration.conftest import *  # noqa: F403
