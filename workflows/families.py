"""OS families (issue 15, item 7): which package manager a host has, read from its os-release, and
the default commands for each family.

A host's family comes from `/etc/os-release` (else `/usr/lib/os-release`), read by the pre-flight
doctor (activities/doctor.py) and parsed here as os-release(5) says: `KEY=value` lines, `#`
comments, values in shell-like quoting; `ID` first, then each word of the space-separated
`ID_LIKE` in its order ("closest first"). Families:

- `apt`: Debian, Ubuntu and their derivatives (ID or ID_LIKE `debian`/`ubuntu`)
- `dnf`: RHEL 8+, Fedora, CentOS Stream, Alma, Rocky, Oracle, Amazon Linux 2023 (`rhel`/`fedora`)
  (a RHEL-like VERSION_ID below 8 has yum, not dnf: no family)
- `zypper`: SLES, openSUSE (`suse`/`opensuse`)

PatchPilot exports the family to every command as `PATCHPILOT_OS_FAMILY` (activities/remote_shell).
The default commands that differ per family (`HostCommands` defaults, the `security` and `full`
update profiles, the package report's package list) are ONE shell `case` over that variable
(`dispatch`): the text approvers see and the approval digest binds (workflows/proof.py) holds
every family's command, so the family a host reports only selects among approved branches and
can never make a host run a command nobody approved. A family without a branch runs none:
the `*)` branch prints why and exits 3, which no check takes for yes or no. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "FAMILIES",
    "FAMILY_VAR",
    "OS_UPDATE_PROFILES",
    "READ_OS_RELEASE",
    "described",
    "dispatch",
    "family_of",
    "parse_os_release",
]

FAMILY_VAR = "PATCHPILOT_OS_FAMILY"
FAMILIES = ("apt", "dnf", "zypper")
OS_RELEASE_FILES = ("/etc/os-release", "/usr/lib/os-release")
# os-release(5): /etc/os-release, else /usr/lib/os-release; neither prints nothing.
READ_OS_RELEASE = "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null; true"
# os-release ID / ID_LIKE words, by family (os-release(5) examples and the distributions' files).
_FAMILY_IDS = {
    "apt": ("debian", "ubuntu"),
    "dnf": ("rhel", "fedora", "centos", "rocky", "almalinux", "ol", "amzn"),
    "zypper": ("suse", "opensuse", "sles", "sled", "opensuse-leap", "opensuse-tumbleweed"),
}
# RHEL and its rebuilds before 8 have yum, not dnf.
_YUM_ONLY = ("rhel", "centos", "rocky", "almalinux", "ol")
_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


class OsReleaseError(ValueError):
    """A line of an os-release file that is not an assignment os-release(5) allows."""


def _value(raw: str) -> str:
    """One os-release value, unquoted as a shell would: "…" with backslash escaping $ " \\ `,
    '…' literally, unquoted with backslash escaping the next character. ValueError for an
    unterminated quote."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == '"':
            end = i + 1
            while end < len(raw) and raw[end] != '"':
                if raw[end] == "\\" and end + 1 < len(raw) and raw[end + 1] in '$"\\`':
                    end += 1
                out.append(raw[end])
                end += 1
            if end >= len(raw):
                raise OsReleaseError(f"unterminated double quote in {raw!r}")
            i = end + 1
        elif char == "'":
            end = raw.find("'", i + 1)
            if end < 0:
                raise OsReleaseError(f"unterminated single quote in {raw!r}")
            out.append(raw[i + 1 : end])
            i = end + 1
        elif char == "\\" and i + 1 < len(raw):
            out.append(raw[i + 1])
            i += 2
        elif char.isspace():
            break  # an unquoted value ends at whitespace (a trailing comment, say)
        else:
            out.append(char)
            i += 1
    return "".join(out)


def parse_os_release(text: str) -> dict[str, str]:
    """`KEY -> value` of an os-release file (os-release(5)); blank and `#` lines skipped.
    OsReleaseError (a ValueError) quoting the first line that is not `KEY=value`."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise OsReleaseError(f"not a KEY=value line: {line[:120]!r}")
        fields[match.group(1)] = _value(match.group(2).strip())
    return fields


def family_of(fields: Mapping[str, str]) -> str | None:
    """The family of an os-release (`parse_os_release`): ID, then each ID_LIKE word in order;
    None when none is known (or a RHEL-like VERSION_ID below 8: yum, not dnf)."""
    words = [fields.get("ID", "").strip().lower(), *fields.get("ID_LIKE", "").lower().split()]
    for word in filter(None, words):
        for family, ids in _FAMILY_IDS.items():
            if word in ids:
                if family == "dnf" and _yum_only(fields):
                    return None
                return family
    return None


def _yum_only(fields: Mapping[str, str]) -> bool:
    words = [fields.get("ID", ""), *fields.get("ID_LIKE", "").split()]
    major = fields.get("VERSION_ID", "").split(".")[0]
    return any(w in _YUM_ONLY for w in words) and major.isdigit() and int(major) < 8


def described(fields: Mapping[str, str]) -> str:
    """What a host's os-release said, for a message: `ID="…" ID_LIKE="…" VERSION_ID="…"`."""
    if not fields:
        return "no os-release (neither /etc/os-release nor /usr/lib/os-release)"
    return " ".join(f"{key}={fields.get(key, '')!r}" for key in ("ID", "ID_LIKE", "VERSION_ID"))


def dispatch(branches: Mapping[str, str], what: str) -> str:
    """One shell command running `branches[family]` for the host's `$PATCHPILOT_OS_FAMILY`;
    any other family prints that `what` has no default there and exits 3 (in a subshell, so
    the caller's shell, e.g. the detached runner, goes on)."""
    cases = " ".join(f"{family}) {command} ;;" for family, command in branches.items())
    return (
        f'case "${FAMILY_VAR}" in {cases} *) echo "PatchPilot has no default {what} for OS '
        f"family '${FAMILY_VAR}': set it for the host\" >&2; (exit 3) ;; esac"
    )


# ---- the default commands, per family ---------------------------------------------------------

# apt: see workflows/targets.py for why each option (noninteractive, lock timeout, conffiles).
APT_LOCK_TIMEOUT_SECONDS = 300
_APT_ENV = "DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a"
_APT = f"apt-get -o DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_SECONDS}"
_KEEP_CONFFILES = "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
APT_UPGRADE = f"export {_APT_ENV}; {_APT} update && {_APT} -y {_KEEP_CONFFILES} upgrade"
APT_FULL = f"export {_APT_ENV}; {_APT} update && {_APT} -y {_KEEP_CONFFILES} dist-upgrade"
# apt has no security-only switch. As patch tools for Debian and Ubuntu do, the `security` profile
# gives apt only the host's security sources: the one-line `deb` entries (sources.list(5)) and the
# deb822 stanzas (`*.sources`) whose suite is a security suite (`<codename>-security`, or Debian's
# older `<codename>/updates`), the stanzas' other suites left out. apt then upgrades only what those
# sources offer (an update that needs a package from elsewhere is kept back, and says so);
# List-Cleanup=0 keeps the other sources' lists. A host with no security source is refused (exit
# 3) rather than reported patched with nothing done.
# A stanza's or a line's suite that is a security suite.
_SECURITY_SUITE = r"/(-security|\/updates)$/"
APT_SECURITY_SOURCES = (
    'd=$(mktemp -d) || exit 1; mkdir "$d/parts" && '
    # The suite is the third word once the [options] are left out; the line is kept whole.
    f'awk \'{{ x = $0; sub(/\\[[^]]*\\]/, "", x); split(x, w) }} '
    f'w[1] == "deb" && w[3] ~ {_SECURITY_SUITE}\' '
    '/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2> /dev/null > "$d/parts/security.list"; '
    'for f in /etc/apt/sources.list.d/*.sources; do [ -e "$f" ] || continue; '
    'awk \'BEGIN { RS = ""; ORS = "\\n\\n" } { n = split($0, l, "\\n"); keep = 0; '
    'for (i = 1; i <= n; i++) if (l[i] ~ /^Suites:/) { m = split(substr(l[i], 8), w, " "); '
    f'l[i] = "Suites:"; for (j = 1; j <= m; j++) if (w[j] ~ {_SECURITY_SUITE}) '
    '{ l[i] = l[i] " " w[j]; keep = 1 } } if (keep) { o = l[1]; '
    'for (i = 2; i <= n; i++) o = o "\\n" l[i]; print o } }\' '
    '"$f" > "$d/parts/${f##*/}"; done'
)
_APT_SECURITY_ONLY = (
    '-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$d/parts" '
    "-o APT::Get::List-Cleanup=0"
)
APT_SECURITY = (
    f"export {_APT_ENV}; {APT_SECURITY_SOURCES}; "
    'if grep -qs . "$d"/parts/*; then '
    f"{_APT} {_APT_SECURITY_ONLY} update && "
    f"{_APT} {_APT_SECURITY_ONLY} -y {_KEEP_CONFFILES} upgrade; r=$?; "
    'else echo "no security source in /etc/apt/sources.list or /etc/apt/sources.list.d: the '
    "security profile would install nothing (use the full profile or an update command of your "
    'own)" >&2; r=3; fi; rm -rf "$d"; (exit $r)'
)
# zypper(8) EXIT CODES: 100 updates/patches needed, 101 security patches needed, 102 reboot
# needed, 103 zypper itself was updated (run it again) are information, not failures; after 103
# the command runs once more, for what the first run could not install.
_ZYPPER_OK = "case $r in 100|101|102) r=0 ;; esac; [ $r -eq 0 ]"


def _zypper(command: str) -> str:
    return f"{command}; r=$?; [ $r -eq 103 ] && {{ {command}; r=$?; }}; {_ZYPPER_OK}"


UPDATES_BY_FAMILY = {
    "apt": {"security": APT_SECURITY, "full": APT_FULL},
    "dnf": {"security": "dnf -y upgrade --security", "full": "dnf -y upgrade"},
    "zypper": {
        "security": _zypper("zypper --non-interactive patch --category security"),
        "full": _zypper("zypper --non-interactive update"),
    },
}
# The update profiles for any family: `security` (only security updates) and `full`.
OS_UPDATE_PROFILES = {
    name: dispatch(
        {family: UPDATES_BY_FAMILY[family][name] for family in FAMILIES}, name + " update"
    )
    for name in ("security", "full")
}

# Exit 0 = a reboot is pending, 1 = not (host_values.yes_no); anything else is no answer.
# dnf-needs-restarting(8) -r: exit 1 when a reboot is required, 0 when not (so swapped here);
# zypper(8) needs-rebooting: 102 when a reboot is needed, 0 when not.
REBOOT_REQUIRED = dispatch(
    {
        "apt": "test -e /var/run/reboot-required",
        "dnf": "dnf -q needs-restarting -r > /dev/null; r=$?; [ $r -le 1 ] && r=$((1 - r)); "
        "(exit $r)",
        "zypper": "zypper -q needs-rebooting > /dev/null; r=$?; "
        "case $r in 102) r=0 ;; 0) r=1 ;; esac; (exit $r)",
    },
    "reboot-required check",
)
# One line per pending update: apt's "name/suite version arch [upgradable from: v]", dnf's and
# zypper's as "name.arch version". Exit 1 with no output: nothing pending. dnf check-update
# (dnf(8)): exit 100 with the list when updates are pending, 0 when none, 1 on error (here 2,
# never "none"); its "Obsoleting Packages" section repeats names and is left out.
LIST_UPDATES = dispatch(
    {
        "apt": "apt list --upgradable 2>/dev/null | grep -v '^Listing'",
        "dnf": "o=$(dnf -q check-update); r=$?; case $r in 0) (exit 1) ;; "
        "100) printf '%s\\n' \"$o\" | sed '/^Obsoleting/,$d' | grep -E '^[^ ]+\\.[^ ]+ +[^ ]' ;; "
        "*) (exit 2) ;; esac",
        "zypper": "zypper --non-interactive --quiet list-updates | awk -F'|' "
        '\'NR > 2 && NF >= 6 { gsub(/ /, ""); print $3 "." $6 " " $5 }\' | grep .',
    },
    "update list",
)
# What the dry run shows the update would change: apt-get -s ("Inst"/"Remv" lines, no lock
# needed); other families print nothing (the dry run then lists no changes for them).
SIMULATE_UPDATE = dispatch(
    {
        "apt": "apt-get -s -o Debug::NoLocking=1 dist-upgrade",
        "dnf": "true",
        "zypper": "true",
    },
    "update simulation",
)
# The package report's package list (activities/package_report.py): "STATE NAME VERSION" per
# package, STATE as dpkg-query's db:Status-Abbrev ("ii " installed; rpm has no half states).
# dpkg-query(1); rpm(8) --queryformat, name.arch (arch left out where there is none, as for
# gpg-pubkey) and [epoch:]version-release.
_DPKG_LIST = "dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package} ${Version}\\n'"
_RPM_LIST = (
    "rpm -qa --qf 'ii %{NAME}%|ARCH?{.%{ARCH}}:{}| %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n'"
)
PACKAGE_LIST = dispatch(
    {
        "apt": f"command -v dpkg-query > /dev/null 2>&1 && {_DPKG_LIST}",
        "dnf": _RPM_LIST,
        "zypper": _RPM_LIST,
    },
    "package list",
)
# The package report's reboot flag: apt's /var/run/reboot-required (with its .pkgs), else the
# family's reboot-required command (no packages named).
REBOOT_FLAG = dispatch(
    {
        "apt": "if [ -e /var/run/reboot-required ]; then echo reboot; "
        "sort -u /var/run/reboot-required.pkgs 2> /dev/null | sed 's/^/reboot-package /'; fi",
        "dnf": "dnf -q needs-restarting -r > /dev/null 2>&1; [ $? -eq 1 ] && echo reboot; true",
        "zypper": "zypper -q needs-rebooting > /dev/null 2>&1; [ $? -eq 102 ] && echo reboot; true",
    },
    "reboot flag",
)
