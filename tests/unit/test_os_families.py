"""OS families (workflows/families.py): os-release read as os-release(5) says, the family it
gives, and each family's default command lines, run by a real `sh` against stand-in package
managers that answer with the exit codes their manuals give (dnf(8), dnf-needs-restarting(8),
zypper(8)): what PatchPilot concludes from each answer is asserted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from activities.doctor import Refusal, _family_refusal, parse_preflight
from activities.package_report import AFTER, BEFORE, parse_report
from activities.remote_shell import unwrap_command, wrap_command
from activities.ssh import CommandResult
from workflows.families import (
    LIST_UPDATES,
    OS_UPDATE_PROFILES,
    REBOOT_REQUIRED,
    SIMULATE_UPDATE,
    UPDATES_BY_FAMILY,
    described,
    family_of,
    parse_os_release,
)
from workflows.models import HostJob, HostStepInput, HostTarget, RolloutInput
from workflows.targets import DEFAULT_COMMANDS, HostCommands

ROCKY = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n'


def test_os_release_values_are_unquoted_as_a_shell_would() -> None:
    text = (
        "# a comment\n\n"
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
        "ID=debian\n"
        "NAME='Single \"quoted\"'\n"
        'HOME_URL="https://x.example/\\$path\\"q\\" \\\\ \\`"\n'
        "VARIANT=with\\ space\n"
    )
    fields = parse_os_release(text)
    assert fields["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
    assert fields["ID"] == "debian"
    assert fields["NAME"] == 'Single "quoted"'
    assert fields["HOME_URL"] == 'https://x.example/$path"q" \\ `'
    assert fields["VARIANT"] == "with space"
    with pytest.raises(ValueError, match="unterminated double quote"):
        parse_os_release('ID="rocky\n')
    with pytest.raises(ValueError, match="not a KEY=value line"):
        parse_os_release("<html>\n")


@pytest.mark.parametrize(
    ("text", "family"),
    [
        ("ID=debian\nVERSION_ID=12\n", "apt"),
        ("ID=ubuntu\nID_LIKE=debian\n", "apt"),
        ('ID=linuxmint\nID_LIKE="ubuntu debian"\n', "apt"),
        (ROCKY, "dnf"),
        ('ID="almalinux"\nID_LIKE="rhel centos fedora"\nVERSION_ID="8.10"\n', "dnf"),
        ("ID=fedora\nVERSION_ID=40\n", "dnf"),
        ('ID="amzn"\nID_LIKE="fedora"\nVERSION_ID="2023"\n', "dnf"),
        ('ID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\n', None),  # yum, not dnf
        ('ID="sles"\nID_LIKE="suse"\nVERSION_ID="15.5"\n', "zypper"),
        ('ID="opensuse-leap"\nID_LIKE="suse opensuse"\n', "zypper"),
        ("ID=arch\n", None),
        ("", None),
    ],
)
def test_the_family_comes_from_id_then_id_like_in_order(text: str, family: str | None) -> None:
    assert family_of(parse_os_release(text)) == family


def test_what_os_release_said_is_quoted_in_messages() -> None:
    assert described(parse_os_release("ID=arch\n")) == "ID='arch' ID_LIKE='' VERSION_ID=''"
    assert described({}).startswith("no os-release")


def test_each_family_has_its_own_update_command_lines() -> None:
    assert UPDATES_BY_FAMILY["dnf"] == {
        "security": "dnf -y upgrade --security",
        "full": "dnf -y upgrade",
    }
    zypper = UPDATES_BY_FAMILY["zypper"]
    assert zypper["security"].startswith("zypper --non-interactive patch --category security;")
    assert zypper["full"].startswith("zypper --non-interactive update;")
    assert "dist-upgrade" in UPDATES_BY_FAMILY["apt"]["full"]
    # The profile is ONE command holding every family's line: what approvers read and sign.
    for name, profile in OS_UPDATE_PROFILES.items():
        for family in ("apt", "dnf", "zypper"):
            assert f"{family}) {UPDATES_BY_FAMILY[family][name]} ;;" in profile
    assert DEFAULT_COMMANDS.reboot_required_check == REBOOT_REQUIRED
    assert DEFAULT_COMMANDS.list_updates == LIST_UPDATES
    assert DEFAULT_COMMANDS.simulate_update == SIMULATE_UPDATE


def stand_in(tmp_path: Path, name: str, script: str) -> None:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def sh(tmp_path: Path, command: str, family: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "PATCHPILOT_OS_FAMILY": family}
    return subprocess.run(
        ["sh", "-c", command], env=env, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(
    ("family", "tool", "exit_code", "pending"),
    [
        ("dnf", "dnf", 1, 0),  # dnf-needs-restarting(8) -r: 1 = a reboot is required
        ("dnf", "dnf", 0, 1),
        ("dnf", "dnf", 127, 127),  # no answer: neither yes nor no
        ("zypper", "zypper", 102, 0),  # zypper(8) needs-rebooting: 102 = reboot needed
        ("zypper", "zypper", 0, 1),
        ("zypper", "zypper", 4, 4),
    ],
)
def test_reboot_required_answers_yes_no_or_nothing(
    tmp_path: Path, family: str, tool: str, exit_code: int, pending: int
) -> None:
    stand_in(tmp_path, tool, f"exit {exit_code}")
    assert sh(tmp_path, REBOOT_REQUIRED, family).returncode == pending


def test_an_unknown_family_runs_no_default_and_says_so(tmp_path: Path) -> None:
    done = sh(tmp_path, REBOOT_REQUIRED, "unknown")
    assert done.returncode == 3  # neither yes (0) nor no (1): host_values.yes_no refuses it
    assert "no default reboot-required check for OS family 'unknown'" in done.stderr


def test_dnf_check_update_exit_100_lists_the_updates_and_0_none(tmp_path: Path) -> None:
    listing = "pp-hello.noarch   1.1-1   lab\\n\\nObsoleting Packages\\nold.noarch  2-1  lab"
    stand_in(tmp_path, "dnf", f'printf "{listing}\\n"; exit 100')
    done = sh(tmp_path, LIST_UPDATES, "dnf")
    assert done.returncode == 0 and done.stdout.splitlines() == ["pp-hello.noarch   1.1-1   lab"]
    stand_in(tmp_path, "dnf", "exit 0")
    done = sh(tmp_path, LIST_UPDATES, "dnf")
    assert (done.returncode, done.stdout) == (1, "")  # grep's "nothing": none pending
    stand_in(tmp_path, "dnf", "echo 'Error: Failed to download metadata' >&2; exit 1")
    assert sh(tmp_path, LIST_UPDATES, "dnf").returncode == 2  # an error, never "none"


def test_zypper_list_updates_table_becomes_name_arch_version(tmp_path: Path) -> None:
    table = (
        "S | Repository | Name     | Current Version | Available Version | Arch\\n"
        "--+------------+----------+-----------------+-------------------+-------\\n"
        "v | lab        | pp-hello | 1.0-1           | 1.1-1             | noarch\\n"
    )
    stand_in(tmp_path, "zypper", f'printf "{table}"')
    done = sh(tmp_path, LIST_UPDATES, "zypper")
    assert done.returncode == 0 and done.stdout == "pp-hello.noarch 1.1-1\n"


@pytest.mark.parametrize(
    ("answers", "ok", "runs"),
    [
        ("0", True, 1),
        ("102", True, 1),  # installed; a reboot is needed (the reboot step asks again)
        ("100", True, 1),
        ("103 0", True, 2),  # zypper updated itself: once more for the rest
        ("103 102", True, 2),
        ("4", False, 1),  # ZYPPER_EXIT_ERR_ZYPP
        ("103 8", False, 2),
    ],
)
def test_zypper_information_codes_are_not_failures_and_103_runs_again(
    tmp_path: Path, answers: str, ok: bool, runs: int
) -> None:
    count = tmp_path / "count"
    stand_in(
        tmp_path,
        "zypper",
        f'echo "$*" >> {count}; set -- {answers}; n=$(wc -l < {count}); '
        'eval "code=\\${$n}"; exit "$code"',
    )
    done = sh(tmp_path, OS_UPDATE_PROFILES["full"], "zypper")
    assert (done.returncode == 0) == ok, done.stderr
    assert count.read_text().splitlines() == ["--non-interactive update"] * runs


def test_the_family_reaches_every_command_and_is_never_host_text() -> None:
    sent = wrap_command("dnf -y upgrade", family="dnf")
    assert "DPKG_FORCE=confdef,confold PATCHPILOT_OS_FAMILY=dnf; dnf -y upgrade" in sent
    assert unwrap_command(sent) == "dnf -y upgrade"
    assert unwrap_command(wrap_command("true", "root", "zypper")) == "true"
    with pytest.raises(ValueError):
        wrap_command("true", family="dnf; rm -rf /")


def test_the_package_report_reads_rpm_on_rpm_families(tmp_path: Path) -> None:
    """BEFORE and AFTER with a stand-in rpm whose database changes between them."""
    state = tmp_path / "rpmdb"
    state.write_text("ii pp-hello.noarch 1.0-1\nii gone.x86_64 2-1\n")
    stand_in(tmp_path, "rpm", f'cat "{state}"')
    stand_in(tmp_path, "dnf", "exit 1")  # needs-restarting -r: a reboot is required
    run = tmp_path / "run"
    (run / "claim").mkdir(parents=True)
    before = sh(tmp_path, BEFORE, "dnf")
    (run / "packages.before").write_text(before.stdout)
    state.write_text("ii pp-hello.noarch 1.1-1\nii new.noarch 3-1\n")
    after = subprocess.run(
        ["sh", "-c", AFTER, "after", str(run)],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "PATCHPILOT_OS_FAMILY": "dnf"},
        capture_output=True,
        text=True,
        check=True,
    )
    # In the order awk gives; the worker sorts (parse_report).
    assert sorted(after.stdout.splitlines()) == [
        "installed new.noarch 3-1",
        "reboot",
        "removed gone.x86_64 2-1",
        "upgraded pp-hello.noarch 1.0-1 1.1-1",
    ]
    report = parse_report(after.stdout, "", "h1")
    assert [(c.name, c.old, c.new) for c in report.upgraded] == [
        ("pp-hello.noarch", "1.0-1", "1.1-1")
    ]
    assert [change.name for change in report.installed] == ["new.noarch"]
    assert [change.name for change in report.removed] == ["gone.x86_64"]
    assert report.reboot_required


def step_on(host: HostTarget, update: str) -> HostStepInput:
    rollout = RolloutInput.model_validate(
        {
            "targetClusters": ["c"],
            "pilotHostCount": 1,
            "approverEmails": ["alice@example.com"],
            "requesterEmail": "bob@example.com",
            "updateCommand": update,
        }
    )
    job = HostJob.from_rollout("r-os", rollout)
    return HostStepInput(job=job, host=host, timeout_seconds=10)


def doctor_of(os_release: str) -> CommandResult:
    text = "== audit\n== locks\n== df\n== held\n== reboot\n== os-release\n" + os_release
    return CommandResult(command="preflight", exit_status=0, stdout=text, stderr="")


def test_an_unknown_family_is_refused_unless_every_command_is_the_hosts_own() -> None:
    found = parse_preflight(doctor_of("ID=arch\n"), "h1")
    assert found.family is None
    default = HostTarget(name="h1", cluster="c", address="10.0.0.1")
    refusal = _family_refusal(found, step_on(default, OS_UPDATE_PROFILES["full"]))
    assert isinstance(refusal, Refusal) and refusal.kind == "UnknownOsFamily"
    assert "(os-release: ID='arch' ID_LIKE='' VERSION_ID='')" in refusal
    assert "give the rollout an update command for this OS" in refusal
    own = HostCommands(
        reboot_required_check="test -e /run/reboot-needed",
        list_updates="pacman -Qu",
        simulate_update="true",
    )
    overridden = default.model_copy(update={"commands": own})
    assert _family_refusal(found, step_on(overridden, "pacman -Syu --noconfirm")) is None
    assert parse_preflight(doctor_of(ROCKY), "h1").family == "dnf"
    # A rollout never runs the dry run's read-only commands: their defaults do not refuse it;
    # a dry run of the same host is refused, naming them.
    reboot_only = default.model_copy(
        update={"commands": HostCommands(reboot_required_check="test -e /run/reboot-needed")}
    )
    assert _family_refusal(found, step_on(reboot_only, "apk upgrade")) is None
    inspected = _family_refusal(found, step_on(reboot_only, "apk upgrade"), inspecting=True)
    assert inspected is not None
    assert "set patchpilot_list_updates, patchpilot_simulate_update for the host" in inspected


def test_doctor_answers_a_host_without_os_release_as_no_family() -> None:
    found = parse_preflight(doctor_of(""), "h1")
    assert found.os_release == {} and found.family is None


def test_the_real_sh_parses_every_default() -> None:
    for command in [*OS_UPDATE_PROFILES.values(), REBOOT_REQUIRED, LIST_UPDATES, AFTER, BEFORE]:
        assert subprocess.run(["sh", "-n", "-c", command], check=False).returncode == 0


def test_a_policy_profile_may_be_a_builtin_os_family_profile_in_its_whole_text() -> None:
    from activities.policy import parse_policy
    from workflows.policy import PolicyError

    policy = """
people:
  alice: {email: alice@example.com}
  bob: {email: bob@example.com}
clusters:
  "*":
    requesters: [bob]
    approvers: [alice]
    updateProfiles: {full: "builtin:full", security: "builtin:security"}
"""
    rule = parse_policy(policy, "policy.yml").rule_for("cluster-a")
    assert rule is not None
    # What approvers read, sign and the host gate compares: every family's command.
    assert dict(rule.update_profiles) == OS_UPDATE_PROFILES
    with pytest.raises(PolicyError, match="'builtin:kernel' is not one of builtin:security"):
        parse_policy(policy.replace("builtin:full", "builtin:kernel"), "policy.yml")


APT_STAND_IN = """#!/bin/sh
for a; do case $a in Dir::Etc::SourceParts=*) parts=${a#*=} ;; esac; done
echo "apt-get $*"
for f in "$parts"/*; do [ -s "$f" ] && { echo "== ${f##*/}"; cat "$f"; }; done
"""
SOURCES_LIST = (
    "deb http://deb.debian.org/debian bookworm main\n"
    "deb http://deb.debian.org/debian-security bookworm main\n"
    "deb [signed-by=/usr/share/keyrings/k.gpg] http://security.debian.org/debian-security "
    "bookworm-security main\n"
    "# deb http://security.debian.org/debian-security bookworm-security contrib\n"
)
DEBIAN_SOURCES = """Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""
UBUNTU_SOURCES = """Types: deb
URIs: http://archive.ubuntu.com/ubuntu
Suites: noble noble-updates noble-security
Components: main universe
"""


def run_apt_security(tmp_path: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The apt `security` profile in a mount namespace of its own, whose /etc/apt holds `files`
    and whose apt-get prints its arguments and the sources it was given."""
    etc = tmp_path / "etc-apt"
    (etc / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (etc / name).write_text(text)
    apt = tmp_path / "apt-get"
    apt.write_text(APT_STAND_IN)
    apt.chmod(0o755)
    inside = f'mount --bind {etc} /etc/apt && mount --bind {apt} /usr/bin/apt-get && sh -c "$1"'
    command = UPDATES_BY_FAMILY["apt"]["security"]
    return subprocess.run(
        ["unshare", "--mount", "sh", "-c", inside, "_", command],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_apt_security_profile_gives_apt_only_the_security_sources(tmp_path: Path) -> None:
    done = run_apt_security(
        tmp_path,
        {
            "sources.list": SOURCES_LIST,
            "sources.list.d/debian.sources": DEBIAN_SOURCES,
            "sources.list.d/ubuntu.sources": UBUNTU_SOURCES,
        },
    )
    assert done.returncode == 0, done.stderr
    update, *update_sources = done.stdout.split("apt-get ")[1].splitlines()
    assert "-o Dir::Etc::SourceList=/dev/null" in update and update.endswith(" update")
    assert "-o APT::Get::List-Cleanup=0" in update
    # One-line entries: only the security suite (not a security URL with another suite, not a
    # comment); deb822 stanzas: only the security stanza, and only the security suite of a
    # stanza that lists several.
    assert "\n".join(update_sources).rstrip("\n") + "\n" == (
        "== debian.sources\nTypes: deb\nURIs: http://deb.debian.org/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "== security.list\n"
        "deb [signed-by=/usr/share/keyrings/k.gpg] http://security.debian.org/debian-security "
        "bookworm-security main\n"
        "== ubuntu.sources\nTypes: deb\nURIs: http://archive.ubuntu.com/ubuntu\n"
        "Suites: noble-security\nComponents: main universe\n"
    )
    upgrade = done.stdout.split("apt-get ")[2].splitlines()[0]
    assert " -y " in upgrade and upgrade.endswith(" upgrade")


def test_the_apt_security_profile_refuses_a_host_without_security_sources(tmp_path: Path) -> None:
    done = run_apt_security(
        tmp_path, {"sources.list": "deb http://deb.debian.org/debian bookworm main\n"}
    )
    assert done.returncode == 3
    assert "no security source in /etc/apt/sources.list" in done.stderr
    assert "apt-get" not in done.stdout  # apt never ran: nothing was reported as patched
