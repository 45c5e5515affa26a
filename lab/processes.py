"""The OpenBao dev server of the lab and the demo (Temporal's dev server is `bot.embedded`)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from bot.embedded import ManagedProcess, find_binary, free_port, log_file_for, spawn, wait_until


class OpenBaoProcess(ManagedProcess):
    """A ``bao server -dev``; ``root_token`` is its root token."""

    def __init__(
        self, proc: subprocess.Popen[bytes], address: str, log_file: Path | None, root_token: str
    ) -> None:
        super().__init__(proc, address, log_file)
        self.root_token = root_token


def start_openbao(
    port: int | None = None,
    root_token: str = "lab-root-token",  # noqa: S107 - a throwaway in-memory dev server
    log_file: Path | None = None,
) -> OpenBaoProcess:
    """Start ``bao server -dev`` (in memory, unsealed, KV v2 at ``secret/``).

    Returns once ``/v1/sys/health`` answers 200; ``.address`` is the URL, ``.root_token`` the token.
    """
    port = port or free_port()
    log_path = log_file_for(log_file, "openbao-dev-")
    argv = [
        find_binary("bao"),
        "server",
        "-dev",
        f"-dev-root-token-id={root_token}",
        f"-dev-listen-address=127.0.0.1:{port}",
        # Otherwise the dev server overwrites the user's own token helper file.
        "-dev-no-store-token",
    ]
    address = f"http://127.0.0.1:{port}"
    managed = OpenBaoProcess(spawn(argv, log_path), address, log_path, root_token)

    wait_until(
        "openbao dev server",
        managed,
        answers(f"{address}/v1/sys/health"),
        timeout=30,
        interval=0.05,
    )
    return managed


def answers(url: str) -> Callable[[], bool]:
    """A readiness probe for `wait_until`: True once a GET of `url` answers 200."""

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return probe
