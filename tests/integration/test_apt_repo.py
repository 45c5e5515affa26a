"""The real-apt lab's packages and repository, read by the real dpkg-deb and the real apt-get (in a
private apt root of its own: nothing of this machine's package state is read or changed)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from lab.apt_repo import build_repo, sources_line, standard_packages

INSTALLED = ("pp-hello", "pp-held", "pp-conf", "pp-reboot", "pp-broken", "pp-debconf")


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], check=True, capture_output=True, text=True).stdout


def private_apt(root: Path, repo: Path) -> list[str]:
    """apt-get options for an apt root under `root` whose only source is `repo` and whose dpkg
    status says every lab package is at 1.0 (pp-held on hold)."""
    for directory in ("state/lists/partial", "cache/archives/partial", "parts"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "sources.list").write_text(sources_line(repo))
    (root / "status").write_text(
        "\n".join(
            f"Package: {name}\nStatus: {'hold' if name == 'pp-held' else 'install'} ok installed\n"
            "Version: 1.0\nArchitecture: all\nMaintainer: lab <lab@example.com>\n"
            f"Description: {name}\n"
            for name in INSTALLED
        )
    )
    options = {
        "Dir::State": root / "state",
        "Dir::State::status": root / "status",
        "Dir::Cache": root / "cache",
        "Dir::Etc::SourceList": root / "sources.list",
        "Dir::Etc::SourceParts": root / "parts",
        "Dir::Etc::PreferencesParts": root / "parts",
        "Debug::NoLocking": "1",
        "APT::Sandbox::User": "root",
    }
    return [word for key, value in options.items() for word in ("-o", f"{key}={value}")]


def test_each_package_is_a_real_deb_with_its_scripts_and_conffiles(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo")
    for package in standard_packages():
        deb = repo / package.deb_name
        fields = dpkg_deb("--field", str(deb), "Package", "Version").split()
        assert fields == ["Package:", package.name, "Version:", package.version]
    postinst = dpkg_deb("--info", str(repo / "pp-reboot_1.1_all.deb"), "postinst")
    assert "/var/run/reboot-required.pkgs" in postinst
    failing = dpkg_deb("--info", str(repo / "pp-broken_1.1_all.deb"), "postinst")
    assert "exit 1" in failing
    conffiles = dpkg_deb("--info", str(repo / "pp-conf_1.1_all.deb"), "conffiles")
    assert conffiles.strip() == "/etc/pp-conf/pp-conf.conf"
    assert "db_input" in dpkg_deb("--info", str(repo / "pp-debconf_1.1_all.deb"), "postinst")
    index = (repo / "Packages").read_text()
    assert len(re.findall(r"^Package: ", index, re.MULTILINE)) == len(standard_packages())


def test_real_apt_sees_every_upgrade_and_keeps_the_held_package(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "repo")
    options = private_apt(tmp_path / "apt", repo)
    update = subprocess.run(
        ["apt-get", *options, "update"], capture_output=True, text=True, timeout=120
    )
    assert update.returncode == 0, update.stdout + update.stderr
    assert "Err:" not in update.stdout and "W: " not in update.stderr, update.stdout + update.stderr
    simulated = subprocess.run(
        ["apt-get", *options, "-s", "upgrade"], capture_output=True, text=True, timeout=120
    )
    assert simulated.returncode == 0, simulated.stdout + simulated.stderr
    upgrades = dict(re.findall(r"^Inst (\S+) \[1\.0\] \((\S+)", simulated.stdout, re.MULTILINE))
    expected = {name: "1.1" for name in INSTALLED if name != "pp-held"}
    assert upgrades == expected, simulated.stdout
    assert "The following packages have been kept back:\n  pp-held\n" in simulated.stdout
