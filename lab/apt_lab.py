"""The real-apt lab: sshd hosts whose `apt-get` and `dpkg` are the real ones.

Each host is a classic lab host (lab/lab.py: its own sshd, mount namespace, command log,
simulated `systemctl` and `reboot`) whose root is an overlay of the machine's `/`, with the
upper layer in the host's directory: what dpkg does there stays on that host, survives the
host's simulated reboots, and never touches the machine's own packages. Its only apt source is a
repository built by lab/apt_repo.py (mounted at REPO_MOUNT); at its first start a host gets the
lab packages at 1.0 (`pp-held` on hold), so `apt-get upgrade` has real work: 1.1 of each.
`systemctl` stays simulated (there is no systemd in the lab). Needs root, `unshare`, overlayfs.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

from lab import sshd
from lab.lab import Lab
from lab.sshd import SSHD

REPO_MOUNT = "/srv/patchpilot-repo"
BASELINE = ("pp-hello", "pp-held", "pp-conf", "pp-reboot", "pp-debconf")
# The simulators a real-apt host keeps: its package managers are the real ones.
_REAL_TOOLS = ("apt-get", "apt", "dnf", "yum")


class AptLab(Lab):
    """A `Lab` whose hosts run the real apt and dpkg over `repo` (see the module doc); the
    lab packages in `installed` are at 1.0 on every host after `start()` and `reset()`."""

    def __init__(
        self,
        root: Path,
        clusters: dict[str, list[str]],
        *,
        repo: Path,
        installed: tuple[str, ...] = BASELINE,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, clusters, **kwargs)
        self.repo = repo
        self.installed = installed

    def _prepare(self) -> None:
        super()._prepare()
        for name in _REAL_TOOLS:
            (self.sim_bin / name).unlink(missing_ok=True)

    def _baseline_script(self) -> str:
        debs = " ".join(f"{REPO_MOUNT}/{name}_1.0_all.deb" for name in self.installed)
        hold = "echo pp-held hold | dpkg --set-selections; " if "pp-held" in self.installed else ""
        return (
            "rm -f /etc/apt/sources.list.d/*; "
            f'echo "deb [trusted=yes] file:{REPO_MOUNT} ./" > /etc/apt/sources.list; '
            f"DEBIAN_FRONTEND=noninteractive dpkg -i {debs} > /dev/null; {hold}"
            "apt-get update -qq > /dev/null"
        )

    def _namespace_script(self) -> str:
        # $1: the host's root directory, $2: the simulators, $3: the sshd configuration.
        # The classic mounts are made onto the overlay's paths before chroot: their sources must
        # be the real directories the test process reads, not the overlay's copies of them.
        mounts = [
            _into_overlay(mount)
            for mount in [*sshd.host_mounts('"$1"'), *sshd.simulator_mounts('"$2"')]
            if not any(f"/{tool} " in mount for tool in _REAL_TOOLS)
        ]
        repo = shlex.quote(str(self.repo))
        baseline = shlex.quote(self._baseline_script())
        return f"""set -e
fs="$1/aptfs"
mkdir -p "$fs/upper" "$fs/work" "$fs/merged"
mount -t overlay overlay -o "lowerdir=/,upperdir=$fs/upper,workdir=$fs/work" "$fs/merged"
for d in proc dev sys; do mount --rbind "/$d" "$fs/merged/$d"; done
mkdir -p "$fs/merged{REPO_MOUNT}"
mount --bind {repo} "$fs/merged{REPO_MOUNT}"
if [ ! -e "$fs/.baseline" ]; then
    chroot "$fs/merged" sh -c {baseline}
    : > "$fs/.baseline"
fi
{chr(10).join(mounts)}
exec chroot "$fs/merged" {SSHD} -D -e -f "$3"
"""

    def reset_packages(self, host: str) -> None:
        """Back to the lab packages at 1.0: the host's overlay layer is thrown away and the host
        restarted (a fresh copy of the machine's root)."""
        h = self.host(host)
        self._kill_host(h.name)
        shutil.rmtree(h.root / "aptfs", ignore_errors=True)
        self.start_host(h.name)


def _into_overlay(mount: str) -> str:
    """`mount --bind SOURCE TARGET` with TARGET moved under the overlay root ("$fs/merged")."""
    head, target = mount.rsplit(" ", 1)
    return f'{head} "$fs/merged"{target}'
