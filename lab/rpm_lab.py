"""Real-dnf hosts in the real-apt lab (issue 15, item 7): hosts whose os-release says Rocky Linux 9
and whose `dnf` and `rpm` are the real ones (Debian's `dnf`, `rpm`, `createrepo-c` packages).

An `RpmLab` is an `AptLab` (lab/apt_lab.py: an overlay of the machine's root per host, sshd inside
the host's private mount namespace) where the hosts in `rpm_hosts` also get, in their own overlay
layer: an `/etc/os-release` of Rocky Linux 9 (so PatchPilot takes them for the dnf family), a dnf
repository file whose only source is an rpm repository built at start-up with `rpmbuild` and
`createrepo_c` (mounted at REPO_MOUNT/rpm: `pp-hello` 1.0 and 1.1, noarch), and `pp-hello` 1.0
installed by dnf. dnf's `local` plugin (on in Debian's dnf-plugins-core; it would keep a copy of
every installed rpm in a repository of its own, which asks for GPG keys) is turned off. The
machine's dpkg state stays underneath, untouched: an apt run would be visible in `dpkg-query`.

`rpm_lab_problem()` says why this machine cannot run it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from lab.apt_lab import REPO_MOUNT, AptLab, apt_lab_problem

RPM_MOUNT = f"{REPO_MOUNT}/rpm"
RPM_PACKAGE = "pp-hello"
ROCKY_OS_RELEASE = (
    'NAME="Rocky Linux"\nVERSION="9.4 (Blue Onyx)"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
    'VERSION_ID="9.4"\nPRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"\n'
)
# What a real-dnf host needs beyond a real-apt host (the Debian package in parentheses).
_NEEDED = {
    "/usr/bin/dnf": "dnf",
    "/usr/bin/rpm": "rpm",
    "/usr/bin/rpmbuild": "rpm",
    "/usr/bin/createrepo_c": "createrepo-c",
    "/usr/lib/python3/dist-packages/dnf-plugins/needs_restarting.py": "dnf-plugins-core",
}
_SPEC = """Name: {name}
Version: {version}
Release: 1
Summary: PatchPilot lab package
License: MIT
BuildArch: noarch
%description
A PatchPilot lab package: one file that holds its version.
%install
mkdir -p %{{buildroot}}/usr/share/{name}
echo {version} > %{{buildroot}}/usr/share/{name}/version
%files
/usr/share/{name}/version
"""


def rpm_lab_problem() -> str | None:
    """Why real-dnf hosts cannot run here, or None: the real-apt lab's needs and _NEEDED's."""
    problem = apt_lab_problem()
    if problem:
        return problem
    for path, package in _NEEDED.items():
        if not Path(path).exists():
            return f"{path} is missing (Debian package {package})"
    return None


def build_rpm_repo(repo: Path, versions: tuple[str, ...] = ("1.0", "1.1")) -> Path:
    """`pp-hello` at each of `versions` built with rpmbuild into `repo`, indexed by
    createrepo_c (repodata/); returns `repo`. CalledProcessError with the tool's output."""
    work = repo / ".build"
    for version in versions:
        spec = work / f"{RPM_PACKAGE}-{version}.spec"
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.write_text(_SPEC.format(name=RPM_PACKAGE, version=version))
        subprocess.run(
            [
                "rpmbuild",
                "-bb",
                "--quiet",
                "--define",
                f"_topdir {work / 'top'}",
                "--define",
                f"_rpmdir {repo}",
                str(spec),
            ],
            check=True,
            capture_output=True,
        )
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(["createrepo_c", "--quiet", str(repo)], check=True, capture_output=True)
    return repo


class RpmLab(AptLab):
    """An `AptLab` whose `rpm_hosts` are Rocky Linux 9 hosts with the real dnf (module doc)."""

    kind = "real-apt/dnf sshd lab (real apt-get, dpkg, dnf and rpm; systemctl simulated)"

    def __init__(
        self, root: Path, clusters: dict[str, list[str]], *, rpm_hosts: set[str], **kwargs: Any
    ) -> None:
        super().__init__(root, clusters, **kwargs)
        self.rpm_hosts = set(rpm_hosts)

    def _check_requirements(self) -> None:
        super()._check_requirements()
        problem = rpm_lab_problem()
        if problem:
            raise FileNotFoundError(problem)

    def _prepare(self) -> None:
        super()._prepare()
        if not (self.repo / "rpm" / "repodata").exists():
            build_rpm_repo(self.repo / "rpm")

    def start_host(self, host: str) -> None:
        if host in self.rpm_hosts:
            # In the host's overlay layer before its first start: the baseline reads it.
            etc = self.host(host).root / "aptfs" / "upper" / "etc"
            etc.mkdir(parents=True, exist_ok=True)
            if not (etc / "os-release").exists():
                (etc / "os-release").write_text(ROCKY_OS_RELEASE)
        super().start_host(host)

    def _baseline_script(self) -> str:
        dnf = (
            "mkdir -p /etc/yum.repos.d /etc/dnf/plugins /etc/dnf/vars; "
            "rm -f /etc/yum.repos.d/*; "
            f"printf '[lab]\\nname=lab\\nbaseurl=file://{RPM_MOUNT}\\ngpgcheck=0\\n' "
            "> /etc/yum.repos.d/lab.repo; "
            "printf '[main]\\nenabled=0\\n' > /etc/dnf/plugins/local.conf; "
            "echo 9 > /etc/dnf/vars/releasever; "
            f"dnf -q -y install {RPM_PACKAGE}-1.0 > /dev/null"
        )
        rocky = "grep -q '^ID=\"rocky\"' /etc/os-release"
        return f"{super()._baseline_script()}; if {rocky}; then {dnf}; fi"
