"""Reading the per-host package report (workflows/packages.py) on the host.

The detached runner (activities/detached.py) runs BEFORE just before the update command and AFTER
just after it, with the run directory as $1, so a report belongs to exactly one run even when
PatchPilot attached to it twice. BEFORE keeps dpkg's package states; AFTER compares them with the
states after the update (awk, on the host: only the changes cross the network), and adds the
reboot flag with its packages and the conffiles dpkg left since the run started (by ctime: dpkg
gives a file the mtime it has in the package; rpm's .rpmnew/.rpmsave too). What apt kept back
(and deferred by phasing) is what `apt-get -s upgrade` still keeps back after the update, read
with LC_ALL=C: apt translates its messages, and the host's locale must not change what is read
(Ansible's apt module forces the C locale for the same reason). Only where that read is missing
(a runner without it) is the update's own output read, which is English only in the C locale.
dpkg's state on apt hosts, rpm's (`rpm -qa`) on dnf and zypper hosts; a host with neither gets an
empty report.
"""

from __future__ import annotations

import re
import shlex

from activities.host_values import HostValueError, shown
from activities.ssh import CommandResult, HostSession
from workflows.families import FAMILY_VAR, PACKAGE_LIST, REBOOT_FLAG
from workflows.packages import KeptBack, PackageChange, PackageReport, UnfinishedPackage

__all__ = ["AFTER", "BEFORE", "kept_back", "parse_report", "read", "simulated_changes"]

# The package list and the reboot flag are chosen by the host's OS family (workflows/families.py:
# dpkg-query on apt hosts, rpm -qa on dnf and zypper hosts, in one "STATE NAME VERSION" format).
BEFORE = f"""{PACKAGE_LIST}
true
"""
AFTER = f"""d=$1
if [ -e "$d/packages.before" ]; then
    {{ {PACKAGE_LIST}; }} > "$d/packages.after"
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
        }}' "$d/packages.before" "$d/packages.after"
fi
{REBOOT_FLAG}
if [ "${FAMILY_VAR}" = apt ] && command -v apt-get > /dev/null; then
    echo kept-read
    LC_ALL=C apt-get -s -o Debug::NoLocking=1 upgrade 2> /dev/null | awk '
        /^The following packages have been kept back:/ {{ k = "kept"; next }}
        /^The following upgrades have been deferred due to phasing:/ {{ k = "deferred"; next }}
        /^[^ \t]/ {{ k = "" }}
        k != "" {{ for (i = 1; i <= NF; i++) print k, $i }}'
fi
find /etc -xdev \\( -name '*.dpkg-dist' -o -name '*.dpkg-old' -o -name '*.dpkg-new' \\
    -o -name '*.rpmnew' -o -name '*.rpmsave' \\) -cnewer "$d/claim" \\
    -printf 'conffile %p\\n' 2> /dev/null
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


def kept_back(
    apt_output: str, held: list[str], read: tuple[list[str], list[str]] | None = None
) -> list[KeptBack]:
    """What apt kept back (and deferred by phasing), with the reason: held, phased, or an
    upgrade that needs packages installed or removed (which `apt-get upgrade` never does).
    `read`: (kept, deferred) names as AFTER read them in the C locale; without it, apt's
    English lists in `apt_output`."""
    if read is None:
        kept = [n for m in _KEPT.finditer(apt_output) for n in m.group(1).split()]
        deferred = [n for m in _DEFERRED.finditer(apt_output) for n in m.group(1).split()]
    else:
        kept, deferred = read
    found: dict[str, str] = {}
    for name in deferred:
        found[name] = "a phased update apt deferred on this host"
    for name in kept:
        found.setdefault(
            name,
            "held (dpkg selection hold)"
            if name in held
            else "its upgrade needs other packages installed or removed (apt-get upgrade "
            "keeps it back; dist-upgrade would not)",
        )
    return [KeptBack(name=name, reason=reason) for name, reason in sorted(found.items())]


def parse_report(text: str, apt_output: str, host: str) -> PackageReport:
    """The report from AFTER's output (`text`) and the update's stdout (`apt_output`);
    HostValueError quoting the first line that is not one AFTER prints."""
    report = PackageReport()
    kept: list[str] = []
    deferred: list[str] = []
    kept_read = False
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
        elif kind == "kept-read" and not rest:
            kept_read = True
        elif kind in ("kept", "deferred") and len(rest) == 1:
            (kept if kind == "kept" else deferred).append(rest[0])
        else:
            raise HostValueError(
                f"the package report on {host} has a line that is not one: {shown(line)}"
            )
    report.kept_back = kept_back(apt_output, report.held, (kept, deferred) if kept_read else None)
    # AFTER prints in the order awk and find happen to give (sorted here, not by a sort(1) on
    # every host): each list by package name, conffiles by path.
    for changes in (report.upgraded, report.installed, report.removed):
        changes.sort(key=lambda change: change.name)
    report.unfinished.sort(key=lambda package: package.name)
    report.held.sort()
    report.conffiles.sort()
    return report


async def read(
    session: HostSession,
    directory: str,
    result: CommandResult,
    printed: tuple[str | None, bool] = (None, False),
) -> PackageReport | None:
    """The report the run in `directory` left (`result`: the update's own result), or None when
    the host has none (no dpkg, or the runner predates reports). HostValueError when it does
    not parse.

    `printed`: (the report, known) as the update's own command printed it
    (activities/detached.Detached); only when it is not known (cut off by the output bound) is
    the report read with a command of its own."""
    report, known = printed
    if known:
        return None if report is None else parse_report(report, result.stdout, session.host.name)
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
