"""An embedded Temporal dev server for `patchpilot worker` / `bot` when TEMPORAL_ADDRESS is unset.

Its database lives in the data directory, so rollouts survive a restart of the process.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from bot.settings import Settings

EMBEDDED_PORT = 7233
EMBEDDED_UI_PORT = 8233


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def temporal_for(settings: Settings, *, say: object = print) -> Iterator[Settings]:
    """Settings whose Temporal is reachable: the configured one, or an embedded dev server."""
    if "temporal_address" in settings.model_fields_set or _listening(EMBEDDED_PORT):
        yield settings
        return
    from bot.lab.processes import start_temporal_dev_server

    data = settings.data_dir.expanduser()
    data.mkdir(parents=True, exist_ok=True)
    ui_port = EMBEDDED_UI_PORT if not _listening(EMBEDDED_UI_PORT) else None
    server = start_temporal_dev_server(
        port=EMBEDDED_PORT,
        ui_port=ui_port,
        db_file=data / "temporal.db",
        log_file=data / "temporal.log",
    )
    ui = f"http://localhost:{ui_port}" if ui_port else "none (8233 busy)"
    if callable(say):
        say(
            f"TEMPORAL_ADDRESS not set: started an embedded Temporal dev server on "
            f"{server.address} (database {data / 'temporal.db'}, Web UI {ui})"
        )
    try:
        yield settings.model_copy(
            update={
                "temporal_address": server.address,
                "temporal_ui_url": settings.temporal_ui_url
                or (f"http://localhost:{ui_port}" if ui_port else None),
            }
        )
    finally:
        server.stop()
