"""Real local infrastructure for PatchPilot's tests and demo: sshd hosts, OpenBao, Temporal."""

from bot.lab.lab import Lab, LabHost
from bot.lab.processes import (
    ManagedProcess,
    OpenBaoProcess,
    free_port,
    start_openbao,
    start_temporal_dev_server,
)

__all__ = [
    "Lab",
    "LabHost",
    "ManagedProcess",
    "OpenBaoProcess",
    "free_port",
    "start_openbao",
    "start_temporal_dev_server",
]
