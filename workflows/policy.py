"""The approval policy: who is who, who may start a rollout on which cluster, who must approve it,
and what may run there. It comes from the worker's and the bot's own configuration
(`PATCHPILOT_POLICY`), never from rollout input.

Pure: `Policy.from_mapping` checks an already parsed document (`activities/policy.py` reads the
file); the rules below answer questions about it without I/O, so workflows may use them too.

Shape (keys as in the issue that introduced it; `operators` added for rollout controls):

    people:   {alice: {email: alice@example.com, slack: U0ALICE01, keys: ["ssh-ed25519 AAAA…"]}}
    groups:   {web-approvers: [alice, carol]}
    frontends:                     # who may vouch for a person it verified, by its own key
      slack: {keys: ["ssh-ed25519 AAAA…"]}    # the Slack bot, for a click it verified
      links: {keys: ["ssh-ed25519 AAAA…"]}    # the approval server, for a personal link
    clusters:                      # the first entry whose name or glob matches the cluster wins
      "cluster-*":
        requesters: [bob]          # people or groups who may start rollouts here
        approvers: [web-approvers]
        minApprovals: 2            # distinct approvers, never the requester
        updateProfiles: {security: "apt-get update && apt-get -y upgrade", full: "builtin:full"}
        allowCustomUpdate: false   # free-form update commands and scripts
        maxHosts: 500
        dryRunBy: [bob, web-approvers]
        operators: [carol]         # may pause, resume, skip and abort besides requester/approvers
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workflows.families import OS_UPDATE_PROFILES

PERSON_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SLACK_USER_PATTERN = re.compile(r"^[UW][A-Z0-9]{2,20}$")
CLUSTER_GLOB_PATTERN = re.compile(r"^[A-Za-z0-9._*?\[\]!-]{1,63}$")
EMAIL_PATTERN = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
KEY_TYPES = ("ssh-ed25519",)
MAX_COMMAND_LENGTH = 8192
# Bidirectional overrides and isolates (Unicode TR#9) and zero-width characters make text read
# differently from what a shell runs (CVE-2021-42574, "Trojan Source").
INVISIBLE = set(
    "\u200b\u200c\u200d\u2060\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


class PolicyError(ValueError):
    """A policy document that cannot be used; the message names the key and says why."""


def visible_problem(text: str) -> str | None:
    """Why `text` (a command) would not read as what runs, or None when it is fine: control
    characters other than tab and newline, bidirectional overrides, zero-width characters, or a
    run of 20+ spaces or tabs (which pushes a tail like `; curl …` out of sight)."""
    for index, char in enumerate(text):
        if char in INVISIBLE:
            return f"invisible character U+{ord(char):04X} at position {index}"
        if char not in "\t\n" and unicodedata.category(char) in ("Cc", "Cf"):
            return f"control character U+{ord(char):04X} at position {index}"
    run = re.search(r"[ \t]{20,}", text)
    if run:
        return f"a run of {len(run.group())} spaces or tabs at position {run.start()}"
    return None


@dataclass(frozen=True)
class Person:
    """One person: a stable name in the policy, their e-mail, Slack user id, and SSH keys."""

    name: str
    email: str
    slack: str | None = None
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterRule:
    """What the policy says about the clusters `pattern` matches; people are resolved names."""

    pattern: str
    requesters: frozenset[str]
    approvers: frozenset[str]
    min_approvals: int
    update_profiles: Mapping[str, str]
    allow_custom_update: bool
    max_hosts: int | None
    dry_run_by: frozenset[str]
    operators: frozenset[str] = frozenset()

    def matches(self, cluster: str) -> bool:
        return fnmatch.fnmatchcase(cluster, self.pattern)


@dataclass(frozen=True)
class Policy:
    """A checked policy. `rule_for` gives a cluster's rule; the `may_*` rules answer with the
    reason a request is refused (a sentence for people), or None when it is allowed."""

    people: Mapping[str, Person]
    groups: Mapping[str, frozenset[str]]
    clusters: tuple[ClusterRule, ...]
    frontends: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _by_email: Mapping[str, str] = field(default_factory=dict, repr=False)
    _by_slack: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_mapping(cls, document: Any, source: str = "policy") -> Policy:
        """Check a parsed policy document; raises PolicyError naming `source`, the key and why."""
        return _Checker(source).policy(document)

    def rule_for(self, cluster: str) -> ClusterRule | None:
        """The first rule whose name or glob matches `cluster`, in file order; None: no rule."""
        return next((rule for rule in self.clusters if rule.matches(cluster)), None)

    def person_by_email(self, email: str) -> Person | None:
        name = self._by_email.get(email.strip().lower())
        return self.people[name] if name else None

    def person_by_slack(self, user_id: str) -> Person | None:
        name = self._by_slack.get(user_id)
        return self.people[name] if name else None

    def vouchers(self, approver: Person) -> dict[str, tuple[str, ...]]:
        """Who may sign a decision of `approver`, by signer name: the person with their own
        keys, and every front end with its keys (a front end vouches for people it verified)."""
        return {approver.name: approver.keys, **self.frontends}

    def may_request(
        self,
        requester: str,
        cluster: str,
        *,
        hosts: int,
        profile: str | None,
        custom_update: bool,
        dry_run: bool,
    ) -> str | None:
        """Why `requester` (a person's name) may not start this rollout on `cluster`, or None.
        `profile` names an update profile; `custom_update` is a free-form command or script."""
        rule = self.rule_for(cluster)
        if rule is None:
            return f"no policy entry matches cluster {cluster}: nobody may patch it"
        allowed = rule.dry_run_by if dry_run else rule.requesters
        if requester not in allowed:
            what = "dry-run" if dry_run else "start rollouts on"
            return f"{requester} may not {what} cluster {cluster} (policy entry {rule.pattern!r})"
        if not dry_run and len(rule.approvers - {requester}) < rule.min_approvals:
            return (
                f"{cluster} needs {rule.min_approvals} approvals from people other than the "
                f"requester, and {requester} is one of its only {len(rule.approvers)} approvers"
            )
        if rule.max_hosts is not None and hosts > rule.max_hosts:
            return f"{hosts} hosts of {cluster} exceed maxHosts {rule.max_hosts} of the policy"
        if dry_run:
            return None
        if profile is not None and profile not in rule.update_profiles:
            known = ", ".join(sorted(rule.update_profiles)) or "none"
            return f"update profile {profile!r} is not allowed on {cluster} (allowed: {known})"
        if custom_update and not rule.allow_custom_update:
            return f"free-form update commands and scripts are not allowed on {cluster}"
        return None

    def approvers_of(self, cluster: str, requester: str | None = None) -> frozenset[str]:
        """The people who may approve a rollout on `cluster`; never its requester."""
        rule = self.rule_for(cluster)
        return (rule.approvers - {requester}) if rule else frozenset()

    def may_control(self, person: str, cluster: str, requester: str) -> bool:
        """Whether `person` may pause, resume, skip, abort or cancel a rollout on `cluster`."""
        rule = self.rule_for(cluster)
        if rule is None:
            return person == requester
        return person == requester or person in rule.approvers | rule.operators


class _Checker:
    """Turns a parsed document into a Policy, naming the key of the first problem it finds."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, reason: str) -> PolicyError:
        return PolicyError(f"{self.source}: {key}: {reason}")

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a mapping, not {type(value).__name__}")
        return value

    def strings(self, value: Any, key: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(key, "must be a list of names")
        return list(value)

    def known_keys(self, value: Mapping[str, Any], key: str, allowed: Sequence[str]) -> None:
        for name in value:
            if name not in allowed:
                raise self.fail(f"{key}.{name}", f"unknown key (known: {', '.join(allowed)})")

    def policy(self, document: Any) -> Policy:
        top = self.mapping(document, "(top level)")
        self.known_keys(top, "(top level)", ("people", "groups", "frontends", "clusters"))
        people = self.people(top.get("people"))
        groups = self.groups(top.get("groups") or {}, people)
        clusters = self.clusters(top.get("clusters"), people, groups)
        return Policy(
            people=people,
            groups=groups,
            clusters=clusters,
            frontends=self.frontends(top.get("frontends") or {}, people, groups),
            _by_email={person.email: name for name, person in people.items()},
            _by_slack={person.slack: name for name, person in people.items() if person.slack},
        )

    def people(self, value: Any) -> dict[str, Person]:
        if not value:
            raise self.fail("people", "at least one person is needed")
        people: dict[str, Person] = {}
        emails: dict[str, str] = {}
        slack_ids: dict[str, str] = {}
        for name, raw in self.mapping(value, "people").items():
            key = f"people.{name}"
            if not isinstance(name, str) or not PERSON_PATTERN.fullmatch(name):
                raise self.fail(key, "a name is lower-case letters, digits, '.', '_' or '-'")
            entry = self.mapping(raw, key)
            self.known_keys(entry, key, ("email", "slack", "keys"))
            email = str(entry.get("email") or "").strip().lower()
            if not EMAIL_PATTERN.fullmatch(email):
                raise self.fail(f"{key}.email", f"{email[:80]!r} is not a valid e-mail address")
            if email in emails:
                raise self.fail(f"{key}.email", f"{email} is also {emails[email]}'s e-mail")
            emails[email] = name
            slack = entry.get("slack")
            if slack is not None:
                if not isinstance(slack, str) or not SLACK_USER_PATTERN.fullmatch(slack):
                    raise self.fail(f"{key}.slack", "must be a Slack user id like U0123ABCD")
                if slack in slack_ids:
                    raise self.fail(f"{key}.slack", f"{slack} is also {slack_ids[slack]}'s id")
                slack_ids[slack] = name
            keys = self.keys(entry.get("keys") or [], f"{key}.keys")
            people[name] = Person(name=name, email=email, slack=slack, keys=keys)
        return people

    def keys(self, value: Any, key: str) -> tuple[str, ...]:
        keys = self.strings(value, key)
        for index, line in enumerate(keys):
            if line.split(" ", 1)[0] not in KEY_TYPES or len(line.split()) < 2:
                raise self.fail(
                    f"{key}[{index}]", "must be an OpenSSH public key 'ssh-ed25519 AAAA…'"
                )
        return tuple(keys)

    def frontends(
        self, value: Any, people: Mapping[str, Person], groups: Mapping[str, frozenset[str]]
    ) -> dict[str, tuple[str, ...]]:
        frontends: dict[str, tuple[str, ...]] = {}
        for name, raw in self.mapping(value, "frontends").items():
            key = f"frontends.{name}"
            if not isinstance(name, str) or not PERSON_PATTERN.fullmatch(name):
                raise self.fail(key, "a name is lower-case letters, digits, '.', '_' or '-'")
            if name in people or name in groups:
                raise self.fail(key, f"{name} is already a person's or a group's name")
            entry = self.mapping(raw, key)
            self.known_keys(entry, key, ("keys",))
            keys = self.keys(entry.get("keys"), f"{key}.keys")
            if not keys:
                raise self.fail(f"{key}.keys", "at least one public key is needed")
            frontends[name] = keys
        return frontends

    def groups(self, value: Any, people: Mapping[str, Person]) -> dict[str, frozenset[str]]:
        groups: dict[str, frozenset[str]] = {}
        for name, members in self.mapping(value, "groups").items():
            key = f"groups.{name}"
            if not isinstance(name, str) or not PERSON_PATTERN.fullmatch(name):
                raise self.fail(key, "a name is lower-case letters, digits, '.', '_' or '-'")
            if name in people:
                raise self.fail(key, f"{name} is already a person's name")
            listed = self.strings(members, key)
            unknown = [member for member in listed if member not in people]
            if unknown:
                raise self.fail(key, f"{', '.join(unknown)} not in people (groups list people)")
            groups[name] = frozenset(listed)
        return groups

    def refs(
        self,
        value: Any,
        key: str,
        people: Mapping[str, Person],
        groups: Mapping[str, frozenset[str]],
    ) -> frozenset[str]:
        found: set[str] = set()
        for ref in self.strings(value or [], key):
            if ref in people:
                found.add(ref)
            elif ref in groups:
                found |= groups[ref]
            else:
                raise self.fail(key, f"{ref!r} is neither a person nor a group")
        return frozenset(found)

    def clusters(
        self, value: Any, people: Mapping[str, Person], groups: Mapping[str, frozenset[str]]
    ) -> tuple[ClusterRule, ...]:
        if not value:
            raise self.fail("clusters", "at least one cluster entry is needed")
        return tuple(
            self.rule(pattern, raw, people, groups)
            for pattern, raw in self.mapping(value, "clusters").items()
        )

    def rule(
        self,
        pattern: Any,
        raw: Any,
        people: Mapping[str, Person],
        groups: Mapping[str, frozenset[str]],
    ) -> ClusterRule:
        key = f"clusters.{pattern}"
        if not isinstance(pattern, str) or not CLUSTER_GLOB_PATTERN.fullmatch(pattern):
            raise self.fail(key, "a cluster name or glob: letters, digits, '.', '_', '-', '*', '?'")
        entry = self.mapping(raw, key)
        self.known_keys(entry, key, RULE_KEYS)
        approvers = self.refs(entry.get("approvers"), f"{key}.approvers", people, groups)
        if not approvers:
            raise self.fail(f"{key}.approvers", "at least one approver is needed")
        minimum = entry.get("minApprovals", 1)
        if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
            raise self.fail(f"{key}.minApprovals", "must be a whole number, at least 1")
        if minimum > len(approvers):
            raise self.fail(
                f"{key}.minApprovals",
                f"{minimum} distinct approvals can never be given: the entry has "
                f"{len(approvers)} approver(s)",
            )
        return ClusterRule(
            pattern=pattern,
            requesters=self.refs(entry.get("requesters"), f"{key}.requesters", people, groups),
            approvers=approvers,
            min_approvals=minimum,
            update_profiles=self.profiles(entry.get("updateProfiles") or {}, key),
            allow_custom_update=self.flag(entry.get("allowCustomUpdate", False), key),
            max_hosts=self.max_hosts(entry.get("maxHosts"), key),
            dry_run_by=self.refs(entry.get("dryRunBy"), f"{key}.dryRunBy", people, groups),
            operators=self.refs(entry.get("operators"), f"{key}.operators", people, groups),
        )

    def profiles(self, value: Any, key: str) -> dict[str, str]:
        profiles: dict[str, str] = {}
        for name, command in self.mapping(value, f"{key}.updateProfiles").items():
            where = f"{key}.updateProfiles.{name}"
            if not isinstance(name, str) or not PERSON_PATTERN.fullmatch(name):
                raise self.fail(
                    where, "a profile name is lower-case letters, digits, '.', '_', '-'"
                )
            if not isinstance(command, str) or not command.strip():
                raise self.fail(where, "must be a non-empty command")
            if command.startswith("builtin:"):
                # PatchPilot's OS-family profiles (workflows/families.py), as their whole text:
                # what approvers read and sign is every family's command.
                builtin = command.removeprefix("builtin:")
                if builtin not in OS_UPDATE_PROFILES:
                    known = ", ".join(f"builtin:{n}" for n in OS_UPDATE_PROFILES)
                    raise self.fail(where, f"{command!r} is not one of {known}")
                command = OS_UPDATE_PROFILES[builtin]
            if len(command) > MAX_COMMAND_LENGTH:
                raise self.fail(where, f"is {len(command)} characters; the limit is 8192")
            problem = visible_problem(command)
            if problem:
                raise self.fail(where, f"{problem}: approvers must see what runs")
            profiles[name] = command
        return profiles

    def flag(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(f"{key}.allowCustomUpdate", "must be true or false")
        return value

    def max_hosts(self, value: Any, key: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(f"{key}.maxHosts", "must be a whole number of hosts, at least 1")
        return value


RULE_KEYS = (
    "requesters",
    "approvers",
    "minApprovals",
    "updateProfiles",
    "allowCustomUpdate",
    "maxHosts",
    "dryRunBy",
    "operators",
)
