"""Real local infrastructure for PatchPilot's tests, demo and benchmarks: sshd hosts with a host
simulator, an asyncssh fallback, a mass lab, OpenBao, and a Slack Web API stand-in.

Not part of the wheel: the lab is for machines that test or demonstrate PatchPilot.
"""

from bot.embedded import ManagedProcess, free_port, start_temporal_dev_server
from lab.lab import Lab, LabHost
from lab.processes import OpenBaoProcess, start_openbao

__all__ = [
    "Lab",
    "LabHost",
    "ManagedProcess",
    "OpenBaoProcess",
    "free_port",
    "start_openbao",
    "start_temporal_dev_server",
]
