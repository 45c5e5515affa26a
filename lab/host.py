"""One lab host as the test process sees it: its addresses and its directories on the real
filesystem, and where each directory appears inside the host."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Where PatchPilot and the simulators look inside a lab host; bind mounts make them per host.
HOST_STATE_DIR = Path("/var/lib/patchpilot")
HOST_LAB_DIR = Path("/var/lib/patchpilot-lab")
SIM_BIN_MOUNT = Path("/usr/local/sbin")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# (name under a host's root directory, where it is bind-mounted inside the host); the LabHost
# properties below name the same directories.
HOST_MOUNTS = (
    ("patchpilot", HOST_STATE_DIR),
    ("lab", HOST_LAB_DIR),
    # Per-host /run: the reboot-required flag, and sshd's privilege separation directory.
    ("run", Path("/run")),
    # A boot id that changes when the lab "reboots" the host.
    ("boot_id", BOOT_ID),
)


@dataclass
class LabHost:
    """A lab host: ``name`` in ``cluster``, reached at ``address``:``port``; its state lives in
    the directory ``root`` (see the properties for what is mounted where inside the host)."""

    name: str
    cluster: str
    address: str
    port: int
    root: Path

    @property
    def state_dir(self) -> Path:
        """The host's ``/var/lib/patchpilot``, as seen from the test process."""
        return self.root / "patchpilot"

    @property
    def lab_dir(self) -> Path:
        """The host's simulator state (``/var/lib/patchpilot-lab`` inside the host)."""
        return self.root / "lab"

    @property
    def run_dir(self) -> Path:
        """The host's ``/run`` (so ``/var/run/reboot-required`` is per host)."""
        return self.root / "run"

    @property
    def boot_id_path(self) -> Path:
        """Mounted over ``/proc/sys/kernel/random/boot_id`` inside the host."""
        return self.root / "boot_id"

    @property
    def host_key_path(self) -> Path:
        """The host's own sshd private key (the mass lab's hosts share one key instead)."""
        return self.root / "ssh_host_ed25519_key"

    @property
    def sshd_config_path(self) -> Path:
        """The host's own sshd configuration (the mass lab's hosts share listeners instead)."""
        return self.root / "sshd_config"

    @property
    def log_path(self) -> Path:
        """Where the host's own sshd writes its output."""
        return self.root / "sshd.log"
