"""PatchPilot's update profile against the real apt and dpkg, in a throw-away overlay root
(lab/apt_root.py) whose only source is the lab repository (lab/apt_repo.py): what dpkg's state is
afterwards, read with dpkg-query, not what a simulator says."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from lab.apt_repo import build_repo
from lab.apt_root import REPO_MOUNT, run_in_apt_root
from workflows.targets import APT_LOCK_TIMEOUT_SECONDS, UPDATE_PROFILES

INSTALL_1_0 = f"""set -u
cd {REPO_MOUNT}
dpkg -i pp-hello_1.0_all.deb pp-held_1.0_all.deb pp-conf_1.0_all.deb pp-reboot_1.0_all.deb \\
    pp-broken_1.0_all.deb pp-debconf_1.0_all.deb > /dev/null
echo pp-held hold | dpkg --set-selections
rm -f /var/run/reboot-required /var/run/reboot-required.pkgs
"""
REPORT = """
echo "== packages"; dpkg-query -W -f='${Package} ${Version} ${Status}\\n' 'pp-*'
echo "== reboot"; cat /var/run/reboot-required.pkgs 2>/dev/null
echo "== conffile"; cat /etc/pp-conf/pp-conf.conf; ls /etc/pp-conf
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repo(tmp_path_factory.mktemp("apt") / "repo")


def section(output: str, name: str) -> list[str]:
    found = re.search(rf"^== {name}\n(.*?)(?=^== |\Z)", output, re.MULTILINE | re.DOTALL)
    assert found, output
    return found.group(1).splitlines()


def test_the_full_profile_upgrades_keeps_conffiles_and_holds_and_never_asks(
    tmp_path: Path, repo: Path
) -> None:
    script = (
        INSTALL_1_0
        + "echo 'mode=mine' >> /etc/pp-conf/pp-conf.conf\n"
        + f'({UPDATE_PROFILES["full"]}) < /dev/null; rc=$?; echo "== exit"; echo $rc\n'
        + REPORT
    )
    began = time.monotonic()
    result = run_in_apt_root(tmp_path / "root", repo, script, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert time.monotonic() - began < 120, "the upgrade waited for something"
    # apt reports the failing postinst and exits 100; every other package is upgraded.
    assert section(result.stdout, "exit") == ["100"], output
    assert "pp-broken package post-installation script subprocess returned error exit status 1" in (
        output
    )
    packages = section(result.stdout, "packages")
    assert packages == [
        "pp-broken 1.1 install ok half-configured",
        "pp-conf 1.1 install ok installed",
        "pp-debconf 1.1 install ok installed",
        "pp-held 1.0 hold ok installed",
        "pp-hello 1.1 install ok installed",
        "pp-reboot 1.1 install ok installed",
    ], output
    # The postinst asked for a reboot the way kernel packages do.
    assert section(result.stdout, "reboot") == ["pp-reboot"]
    # --force-confold: the host's change stays, the package's new version waits beside it.
    conffile = section(result.stdout, "conffile")
    assert conffile[:2] == ["# pp-conf 1.0", "mode=default"] and "mode=mine" in conffile
    assert "pp-conf.conf.dpkg-dist" in conffile


def test_the_profile_waits_for_the_dpkg_lock_then_names_its_holder(
    tmp_path: Path, repo: Path
) -> None:
    # Another apt holds the lock (apt locks with fcntl, as this holder does) for longer than
    # the profile's wait; the wait is shortened from its 300 s for the test.
    assert f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_SECONDS}" in UPDATE_PROFILES["full"]
    profile = UPDATE_PROFILES["full"].replace(f"Timeout={APT_LOCK_TIMEOUT_SECONDS}", "Timeout=3")
    holder = (
        'python3 -c \'import fcntl, time; f = open("/var/lib/dpkg/lock-frontend", "w"); '
        "fcntl.lockf(f, fcntl.LOCK_EX); time.sleep(60)' > /dev/null 2>&1 &\nholder=$!\nsleep 1\n"
    )
    script = INSTALL_1_0 + holder + f"start=$(date +%s); ({profile}) < /dev/null; rc=$?\n"
    script += 'echo "== exit"; echo $rc $(( $(date +%s) - start ))\nkill $holder\n' + REPORT
    result = run_in_apt_root(tmp_path / "root", repo, script, timeout=240)
    output = result.stdout + result.stderr
    exit_status, waited = section(result.stdout, "exit")[0].split()
    assert exit_status == "100", output
    assert 3 <= int(waited) < 60, output
    assert re.search(
        r"Could not get lock /var/lib/dpkg/lock-frontend\. It is held by process "
        r"\d+ \(python3\)",
        output,
    ), output
    assert "pp-hello 1.0 install ok installed" in section(result.stdout, "packages")
