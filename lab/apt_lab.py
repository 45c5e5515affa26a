"""The real-apt lab: sshd hosts whose `apt-get` and `dpkg` are the real ones.

Each host is a classic lab host (lab/lab.py: its own sshd, mount namespace, command log,
simulated `systemctl` and `reboot`) whose root is an overlay of the machine's `/`, with the
upper layer in the host's directory: what dpkg does there stays on that host, survives the
host's simulated reboots, and never touches the machine's own packages. Its only apt source is a
repository built by lab/apt_repo.py (mounted at REPO_MOUNT); at its first start a host gets the
lab packages at 1.0 (`pp-held` on hold), so `apt-get upgrade` has real work: 1.1 of each.
`systemctl` stays simulated (there is no systemd in the lab). Needs root, `unshare`, overlayfs.

`apt_lab_problem()` says why this machine cannot run it (the demo and the tests then use the
simulated hosts of lab/lab.py).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab import sshd
from lab.lab import Lab
from lab.sshd import SSHD

REPO_MOUNT = "/srv/patchpilot-repo"
BASELINE = ("pp-hello", "pp-held", "pp-conf", "pp-reboot", "pp-debconf")
# The simulators a real-apt host keeps: its package managers are the real ones.
_REAL_TOOLS = ("apt-get", "apt", "dnf", "yum")
# What a real-apt host needs from the machine (the Debian package in parentheses).
_NEEDED = {
    "/usr/bin/apt-get": "apt",
    "/usr/bin/dpkg": "dpkg",
    "/usr/bin/dpkg-deb": "dpkg",
    "/usr/bin/dpkg-scanpackages": "dpkg-dev",
    "/usr/sbin/chroot": "coreutils",
}


def apt_lab_problem() -> str | None:
    """Why real-apt hosts cannot run on this machine, or None when they can: root, the tools
    in _NEEDED, overlayfs (the kernel's, listed in /proc/filesystems once its module is in)."""
    if os.geteuid() != 0:
        return "real-apt hosts need root (mount namespaces, overlayfs, chroot)"
    for path, package in _NEEDED.items():
        if not Path(path).exists():
            return f"{path} is missing (Debian package {package})"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if "overlay" not in filesystems and not Path("/sys/module/overlay").exists():
        # Not listed until first used when it is a module: try to load it, as mount would.
        subprocess.run(["modprobe", "overlay"], capture_output=True, check=False)
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "the kernel has no overlayfs (modprobe overlay failed)"
    return None


class AptLab(Lab):
    """A `Lab` whose hosts run the real apt and dpkg over `repo` (see the module doc); the
    lab packages in `installed` are at 1.0 on every host after `start()` and `reset_packages`.

    `repo` defaults to one built at `start()` under the lab root (lab/apt_repo.py). With
    `fresh_packages` (the default) `start()` throws away what an earlier start left in the hosts'
    package state (a demo run again starts from 1.0); without it, the hosts keep it."""

    kind = "real-apt sshd lab (real apt-get and dpkg; systemctl and reboot simulated)"

    def __init__(
        self,
        root: Path,
        clusters: dict[str, list[str]],
        *,
        repo: Path | None = None,
        installed: tuple[str, ...] = BASELINE,
        fresh_packages: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, clusters, **kwargs)
        self.repo = repo or self.root / "repo"
        self._build_repo = repo is None
        self.installed = installed
        self.fresh_packages = fresh_packages

    def _check_requirements(self) -> None:
        super()._check_requirements()
        problem = apt_lab_problem()
        if problem:
            raise FileNotFoundError(problem)

    def _prepare(self) -> None:
        super()._prepare()
        for name in _REAL_TOOLS:
            (self.sim_bin / name).unlink(missing_ok=True)
        if self._build_repo and not (self.repo / "Packages").exists():
            from lab.apt_repo import build_repo

            build_repo(self.repo)
        if self.fresh_packages:
            for h in self.hosts:
                shutil.rmtree(h.root / "aptfs", ignore_errors=True)

    def set_fault(self, host: str, fault: str) -> None:
        """As `Lab.set_fault`; `update-fail` is made real: `pp-broken` 1.0 is installed with
        dpkg, so the next upgrade runs its 1.1 postinst, which fails (dpkg's own error, apt's
        exit 100). Needs the host running."""
        if fault != "update-fail":
            super().set_fault(host, fault)
            return
        self.install(host, "pp-broken")

    def install(self, host: str, *packages: str, version: str = "1.0") -> None:
        """`dpkg -i` the lab repository's `packages` at `version` on a running host (from code
        without an event loop of its own, e.g. the demo's start-up). RuntimeError with dpkg's
        message when it fails."""
        debs = " ".join(f"{REPO_MOUNT}/{name}_{version}_all.deb" for name in packages)

        def run() -> Any:
            return asyncio.run(self.run(host, f"dpkg -i {debs}", timeout=120))

        with ThreadPoolExecutor(max_workers=1) as pool:  # a thread: the caller may be in a loop
            result = pool.submit(run).result()
        if result.exit_status != 0:
            raise RuntimeError(f"dpkg -i {debs} on {host} failed: {result.stderr}")

    def dpkg_log(self, host: str) -> list[str]:
        """The host's /var/log/dpkg.log since the lab packages were installed at 1.0, read from
        the host's overlay layer (no SSH): what dpkg itself did on the host."""
        path = self.host(host).root / "aptfs" / "upper" / "var" / "log" / "dpkg.log"
        try:
            return path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def upgrade_runs(self, host: str, package: str = "pp-hello") -> int:
        """How many times dpkg upgraded `package` on the host (its log's `upgrade` lines)."""
        return sum(f" upgrade {package}:all " in line for line in self.dpkg_log(host))

    def _baseline_script(self) -> str:
        debs = " ".join(f"{REPO_MOUNT}/{name}_1.0_all.deb" for name in self.installed)
        hold = "echo pp-held hold | dpkg --set-selections; " if "pp-held" in self.installed else ""
        return (
            "rm -f /etc/apt/sources.list.d/*; "
            f'echo "deb [trusted=yes] file:{REPO_MOUNT} ./" > /etc/apt/sources.list; '
            f"DEBIAN_FRONTEND=noninteractive dpkg -i {debs} > /dev/null; {hold}"
            "apt-get update -qq > /dev/null; "
            # From here on dpkg's log shows only what the lab's users did.
            ": > /var/log/dpkg.log"
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
