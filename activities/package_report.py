"""Reading the per-host package report (workflows/packages.py) on the host.

The detached runner (activities/detached.py) runs BEFORE just before the update command and AFTER
just after it, with the run directory as $1, so a report belongs to exactly one run even when
PatchPilot attached to it twice. BEFORE keeps dpkg's package states; AFTER compares them with the
states after the update (awk, on the host: only the changes cross the network), and adds the
reboot flag with its packages and the conffiles dpkg left since the run started (by ctime: dpkg
gives a file the mtime it has in the package). apt's own list
of what it kept back comes from the update's output. A host without dpkg gets an empty report.
"""

from __future__ import annotations

import re
import shlex

from activities.host_values import HostValueError, shown
from activities.ssh import CommandResult, HostSession
from workflows.packages import KeptBack, PackageChange, PackageReport, UnfinishedPackage

__all__ = ["AFTER", "BEFORE", "kept_back", "parse_report", "read", "simulated_changes"]

# dpkg-query(1): db:Status-Abbrev is want/state/error ("ii ", "hi ", "iF ", "rc "); the package
# name carries its architecture where several are installed (libc6:i386).
_QUERY = "dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package} ${Version}\\n'"
BEFORE = f"""command -v dpkg-query > /dev/null 2>&1 || exit 0
{_QUERY}
"""
AFTER = f"""d=$1
if command -v dpkg-query > /dev/null 2>&1 && [ -e "$d/packages.before" ]; then
    {_QUERY} > "$d/packages.after"
    awk 'function on(s) {{ s = substr(s, 2, 1); return s != "n" && s != "c" }}
        NR == FNR {{ if (on($1)) old[$2] = $3; next }}
        on($1) {{ new[$2] = $3; st[$2] = $1 }}
        END {{
            for (p in new) {{
                if (!(p in old)) print "installed", p, new[p]
                else if (old[p] != new[p]) print "upgraded", p, old[p], new[p]
                s = substr(st[p], 2, 1)
                if (s != "i") print "unfinished", p, new[p], s
                if (substr(st[p], 1, 1) == "h") print "held", p, new[p]
            }}
            for (p in old) if (!(p in new)) print "removed", p, old[p]
        }}' "$d/packages.before" "$d/packages.after" | sort -k2,2 -k1,1
fi
if [ -e /var/run/reboot-required ]; then
    echo reboot
    sort -u /var/run/reboot-required.pkgs 2> /dev/null | sed 's/^/reboot-package /'
fi
find /etc -xdev \\( -name '*.dpkg-dist' -o -name '*.dpkg-old' -o -name '*.dpkg-new' \\) \\
    -cnewer "$d/claim" 2> /dev/null | sort | sed 's/^/conffile /'
true
"""
# dpkg's package states (dpkg-query(1)), by the letter db:Status-Abbrev gives them.
_STATES = {
    "H": "half-installed",
    "U": "unpacked, not configured",
    "F": "half-configured",
    "W": "triggers awaited",
    "t": "triggers pending",
}
_KEPT = re.compile(r"^The following packages have been kept back:\n((?:[ \t]+\S.*\n?)+)", re.M)
_DEFERRED = re.compile(
    r"^The following upgrades have been deferred due to phasing:\n((?:[ \t]+\S.*\n?)+)", re.M
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._~:-]*$")


def kept_back(apt_output: str, held: list[str]) -> list[KeptBack]:
    """What apt said it kept back (and deferred by phasing), with the reason: held, phased, or
    an upgrade that needs packages installed or removed (which `apt-get upgrade` never does)."""
    found: dict[str, str] = {}
    for match in _DEFERRED.finditer(apt_output):
        for name in match.group(1).split():
            found[name] = "a phased update apt deferred on this host"
    for match in _KEPT.finditer(apt_output):
        for name in match.group(1).split():
            if name in found:
                continue
            found[name] = (
                "held (dpkg selection hold)"
                if name in held
                else "its upgrade needs other packages installed or removed (apt-get upgrade "
                "keeps it back; dist-upgrade would not)"
            )
    return [KeptBack(name=name, reason=reason) for name, reason in sorted(found.items())]


def parse_report(text: str, apt_output: str, host: str) -> PackageReport:
    """The report from AFTER's output (`text`) and the update's stdout (`apt_output`);
    HostValueError quoting the first line that is not one AFTER prints."""
    report = PackageReport()
    for line in text.splitlines():
        kind, *rest = line.split() or [""]
        if not kind:
            continue
        if kind == "conffile" and rest:
            report.conffiles.append(line.split(" ", 1)[1])
            continue
        if rest and not _NAME.match(rest[0]):
            kind = "bad"
        if kind == "upgraded" and len(rest) == 3:
            report.upgraded.append(PackageChange(name=rest[0], old=rest[1], new=rest[2]))
        elif kind == "installed" and len(rest) == 2:
            report.installed.append(PackageChange(name=rest[0], new=rest[1]))
        elif kind == "removed" and len(rest) == 2:
            report.removed.append(PackageChange(name=rest[0], old=rest[1]))
        elif kind == "unfinished" and len(rest) == 3:
            state = _STATES.get(rest[2], f"state {rest[2]}")
            report.unfinished.append(UnfinishedPackage(name=rest[0], version=rest[1], state=state))
        elif kind == "held" and len(rest) == 2:
            report.held.append(rest[0])
        elif kind == "reboot" and not rest:
            report.reboot_required = True
        elif kind == "reboot-package" and len(rest) == 1:
            report.reboot_packages.append(rest[0])
        else:
            raise HostValueError(
                f"the package report on {host} has a line that is not one: {shown(line)}"
            )
    report.kept_back = kept_back(apt_output, report.held)
    return report


async def read(session: HostSession, directory: str, result: CommandResult) -> PackageReport | None:
    """The report the run in `directory` left (`result`: the update's own result), or None when
    the host has none (no dpkg, or the runner predates reports). HostValueError when it does
    not parse."""
    quoted = shlex.quote(f"{directory}/report")
    found = await session.run(
        f"[ -e {quoted} ] && cat {quoted}", 60, what="reading the package report"
    )
    if found.exit_status == 1 and not found.stdout:
        return None
    if not found.ok or not found.stdout_complete:
        raise HostValueError(
            f"reading the package report on {session.host.name} exited {found.exit_status}"
            f"{'' if found.stdout_complete else ' (longer than PatchPilot keeps)'}: {found.tail()}"
        )
    return parse_report(found.stdout, result.stdout, session.host.name)


# apt-get -s: "Inst NAME [OLD] (NEW SUITE [ARCH])", "Inst NAME (NEW …)", "Remv NAME [OLD]".
_SIMULATED = re.compile(r"^(Inst|Remv) (\S+)(?: \[([^\]]+)\])?(?: \((\S+))?", re.M)


def simulated_changes(apt_output: str) -> list[str]:
    """What `apt-get -s` says would change, one "upgrade NAME OLD → NEW" / "install NAME NEW" /
    "remove NAME OLD" per package, in apt's order; empty for any other output."""
    changes = []
    for verb, name, old, new in _SIMULATED.findall(apt_output):
        if verb == "Remv":
            changes.append(f"remove {name} {old}".rstrip())
        elif old:
            changes.append(f"upgrade {name} {old} → {new}")
        else:
            changes.append(f"install {name} {new}")
    return changes
