"""Test packages and a local apt repository, built at test time with Debian's own tools.

The first part of the real-apt lab (issue 15): `dpkg-deb --build` makes each package and
`dpkg-scanpackages` (dpkg-dev) indexes them, so apt and dpkg meet real packages whose maintainer
scripts do what real ones do: ask for a reboot as kernel packages do (`/var/run/reboot-required`
and `.pkgs`), fail, change a conffile, ask a debconf question. `sources_line` is the one apt source
a host needs (`[trusted=yes]`: the repository is local and unsigned). Needs `dpkg-deb` and
`dpkg-scanpackages` (Debian packages dpkg and dpkg-dev).
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# Debian's convention for "a reboot is needed" (update-notifier-common's notify-reboot-required).
_REBOOT_POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
    echo "*** System restart required ***" > /var/run/reboot-required
    echo "$DPKG_MAINTSCRIPT_PACKAGE" >> /var/run/reboot-required.pkgs
fi
"""
_FAILING_POSTINST = """#!/bin/sh
echo "pp-broken: simulated configuration failure" >&2
exit 1
"""
# Asks through debconf (debconf-devel(7)); with DEBIAN_FRONTEND=noninteractive it takes the default.
_DEBCONF_POSTINST = """#!/bin/sh
set -e
. /usr/share/debconf/confmodule
db_input high pp-debconf/mode || true
db_go || true
"""
# Takes its time, so that a test can cut the connection or kill the worker mid-upgrade: as many
# seconds as /etc/pp-slow.seconds says (3 without it), marking when it is under way.
_SLOW_POSTINST = """#!/bin/sh
touch /var/run/pp-slow.configuring
sleep "$(cat /etc/pp-slow.seconds 2>/dev/null || echo 3)"
rm -f /var/run/pp-slow.configuring
"""
_DEBCONF_TEMPLATES = """Template: pp-debconf/mode
Type: select
Choices: safe, fast
Default: safe
Description: How should pp-debconf run?
"""


@dataclass(frozen=True)
class TestPackage:
    """One binary package: `files` maps absolute paths to contents, `conffiles` lists which of
    them dpkg treats as conffiles, `scripts` maps maintainer script names (postinst, …) to text."""

    name: str
    version: str
    files: dict[str, str] = field(default_factory=dict)
    conffiles: tuple[str, ...] = ()
    scripts: dict[str, str] = field(default_factory=dict)
    templates: str | None = None

    @property
    def deb_name(self) -> str:
        return f"{self.name}_{self.version}_all.deb"


def standard_packages() -> list[TestPackage]:
    """The lab's packages: each 1.0 (installed on a host) and 1.1 (in the repository), and the
    ones whose 1.1 reboots, fails, changes a conffile, asks a question or takes its time
    (`pp-slow`); `pp-held` is put on hold by the lab."""
    conf = "/etc/pp-conf/pp-conf.conf"
    packages = []
    for version in ("1.0", "1.1"):
        packages += [
            TestPackage("pp-hello", version, {"/usr/share/pp-hello/version": version}),
            TestPackage("pp-held", version, {"/usr/share/pp-held/version": version}),
            TestPackage(
                "pp-conf", version, {conf: f"# pp-conf {version}\nmode=default\n"}, (conf,)
            ),
        ]
    packages += [
        TestPackage("pp-reboot", "1.0"),
        TestPackage("pp-reboot", "1.1", scripts={"postinst": _REBOOT_POSTINST}),
        TestPackage("pp-broken", "1.0"),
        TestPackage("pp-broken", "1.1", scripts={"postinst": _FAILING_POSTINST}),
        TestPackage("pp-slow", "1.0"),
        TestPackage("pp-slow", "1.1", scripts={"postinst": _SLOW_POSTINST}),
        TestPackage("pp-debconf", "1.0"),
        TestPackage(
            "pp-debconf",
            "1.1",
            scripts={"postinst": _DEBCONF_POSTINST},
            templates=_DEBCONF_TEMPLATES,
        ),
    ]
    return packages


def build_package(package: TestPackage, out_dir: Path) -> Path:
    """`dpkg-deb --build` the package into `out_dir`; returns the .deb's path.
    CalledProcessError (with dpkg-deb's message) when dpkg-deb refuses it."""
    tree = out_dir / "build" / f"{package.name}-{package.version}"
    if tree.exists():
        shutil.rmtree(tree)
    control = tree / "DEBIAN"
    control.mkdir(parents=True)
    (control / "control").write_text(
        f"Package: {package.name}\nVersion: {package.version}\nArchitecture: all\n"
        "Maintainer: PatchPilot lab <lab@example.com>\nSection: misc\nPriority: optional\n"
        f"Description: PatchPilot lab package {package.name}\n"
    )
    for path, text in package.files.items():
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if package.conffiles:
        (control / "conffiles").write_text("".join(f"{path}\n" for path in package.conffiles))
    for name, text in package.scripts.items():
        script = control / name
        script.write_text(text)
        script.chmod(0o755)
    if package.templates:
        (control / "templates").write_text(package.templates)
    deb = out_dir / package.deb_name
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
        text=True,
    )
    return deb


def build_repo(repo: Path, packages: list[TestPackage] | None = None) -> Path:
    """Build `packages` (default `standard_packages()`) into the flat repository `repo` with its
    `Packages` (and `.xz`, `.gz`) index (dpkg-scanpackages); returns `repo`."""
    repo.mkdir(parents=True, exist_ok=True)
    for package in standard_packages() if packages is None else packages:
        build_package(package, repo)
    index = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (repo / "Packages").write_text(index)
    # apt asks for compressed indexes first (xz, then gz, …, Acquire::CompressionTypes); without
    # them it logs an "Err:" line for each before it falls back to the plain one.
    (repo / "Packages.xz").write_bytes(lzma.compress(index.encode()))
    (repo / "Packages.gz").write_bytes(gzip.compress(index.encode()))
    return repo


def sources_line(repo: Path) -> str:
    """The apt source (sources.list(5) one-line style) for the flat repository at `repo`."""
    return f"deb [trusted=yes] file:{repo} ./\n"
