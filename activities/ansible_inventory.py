"""Inventories read by Ansible itself: `ansible-inventory -i SRC … --list` in a subprocess.

Whatever `ansible-inventory -i` accepts works here: INI and YAML files, host ranges, directories
with `group_vars/` and `host_vars/`, inventory plugins (constructed, or cloud plugins such as
amazon.aws.aws_ec2 when installed), every variable-precedence rule. PatchPilot never interprets
inventory syntax itself, so it cannot drift from Ansible.

Ansible runs in another process (`activities.ansible_runner`: a fork server that has imported
Ansible once, else `python -m ansible.cli.inventory`, with the interpreter running PatchPilot): it
keeps global state and is not thread-safe, and another process also keeps Ansible (GPL) and an
inventory plugin's imports out of the worker.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from activities.ansible_runner import run_inventory_cli

# Ansible only warns about a source it cannot parse and goes on with an empty inventory; a
# patching tool must stop instead (both settings are Ansible's own, see `ansible-config list`).
_STRICT_ENV = {
    "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
    "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
    "ANSIBLE_NOCOLOR": "True",
    "ANSIBLE_FORCE_COLOR": "False",
    # Cluster names such as cluster-a are PatchPilot's usual names; Ansible keeps them as they are
    # but would warn on every reading.
    "ANSIBLE_TRANSFORM_INVALID_GROUP_CHARS": "ignore",
}
# Upper bound on one `ansible-inventory` run; a cloud plugin queries an API.
RUN_TIMEOUT_SECONDS = 300.0
# Sources that are not files (a cloud plugin's answer) can change without any file changing.
MAX_AGE_SECONDS = 300.0
# Readings kept: the whole inventory plus recent --limit patterns.
MAX_ENTRIES = 16
_MAX_ERROR_CHARS = 2000
_PLUGIN_REFUSAL = re.compile(
    r"^\[WARNING\]: \s*\*?\s*Failed to parse .*? with "
    r"'?(?P<plugin>[\w.]+)'? plugin: (?P<reason>.*)$"
)


T = TypeVar("T")


class InventoryError(ValueError):
    """The inventory cannot be used; the message names the source and says why."""


def split_sources(spec: str | Path) -> list[str]:
    """`PATCHPILOT_INVENTORY` -> Ansible `-i` sources: one path, or a comma-separated list.

    A value that is an existing path is one source even if it contains a comma.
    Raises InventoryError for an empty value.
    """
    text = str(spec).strip()
    if text and Path(text).exists():
        return [text]
    sources = [part.strip() for part in text.split(",") if part.strip()]
    if not sources:
        raise InventoryError("PATCHPILOT_INVENTORY is empty: name one or more inventory sources")
    return sources


def run_ansible_inventory(sources: list[str], limit: str | None = None) -> dict[str, Any]:
    """The JSON of `ansible-inventory -i S1 -i S2 … --list [--limit PATTERN]`.

    Raises InventoryError with Ansible's own message and the sources named when Ansible cannot
    read a source, is missing, or does not finish within RUN_TIMEOUT_SECONDS.
    """
    argv = ["--list"]
    for source in sources:
        argv += ["-i", source]
    if limit is not None:
        argv += ["--limit", limit]
    named = ", ".join(sources)
    missing = [source for source in sources if not Path(source).exists()]
    if missing:
        # Ansible would only say it "failed to parse" a file that is not there.
        raise InventoryError(
            f"cannot read inventory {', '.join(missing)}: no such file or directory"
        )
    try:
        done = run_inventory_cli(argv, {**os.environ, **_STRICT_ENV}, RUN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise InventoryError(
            f"cannot read inventory {named}: ansible-inventory did not finish in "
            f"{RUN_TIMEOUT_SECONDS:.0f} s"
        ) from None
    if done.returncode != 0:
        raise InventoryError(f"cannot read inventory {named}: {_ansible_error(done.stderr)}")
    try:
        listing = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise InventoryError(
            f"inventory {named}: ansible-inventory printed no JSON: {error}"
        ) from None
    if not isinstance(listing, dict):
        raise InventoryError(f"inventory {named}: ansible-inventory printed no JSON object")
    # Kept for the user: e.g. why a --limit pattern matched nothing.
    warnings = [
        line.removeprefix("[WARNING]:").strip()
        for line in done.stderr.splitlines()
        if line.startswith("[WARNING]:")
    ]
    listing.setdefault("_meta", {})["warnings"] = warnings
    return listing


def _ansible_error(stderr: str) -> str:
    """Ansible's own words, shortened: its errors, then one line per plugin that refused the
    source (`yaml plugin: …`), without the repeated "caused by" and origin lines."""
    if "No module named ansible" in stderr:
        return "ansible-core is not installed with PatchPilot (pip install ansible-core)"
    errors: list[str] = []
    reasons: dict[str, list[str]] = {}  # reason -> the plugins that gave it
    for line in stderr.splitlines():
        if line.startswith("[ERROR]:"):
            errors.append(line.removeprefix("[ERROR]:").strip())
        elif match := _PLUGIN_REFUSAL.match(line):
            reasons.setdefault(match["reason"].strip(), []).append(match["plugin"])
    said = [
        f"{', '.join(plugins)} plugin{'s' if len(plugins) > 1 else ''}: {reason}"
        for reason, plugins in reasons.items()
    ]
    if any(reason.startswith("YAML parsing failed") for reason in reasons):
        errors.insert(0, "it is not valid YAML")
    text = "; ".join(errors + said) or stderr.strip()
    text = text or "ansible-inventory failed without saying why"
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + " …"


def group_hosts(listing: dict[str, Any]) -> dict[str, list[str]]:
    """Group name -> its hosts, its own first and then its children's, in inventory order, each
    host once (as Ansible's `Group.get_hosts`). `all` and `ungrouped` are included."""
    resolved: dict[str, list[str]] = {}

    def hosts_of(name: str, path: tuple[str, ...]) -> list[str]:
        if name in resolved:
            return resolved[name]
        group = listing.get(name) or {}
        members: dict[str, None] = dict.fromkeys(str(h) for h in group.get("hosts") or [])
        for child in group.get("children") or []:
            if child not in path:  # Ansible refuses cycles; never loop on a malformed listing
                members.update(dict.fromkeys(hosts_of(str(child), (*path, name))))
        resolved[name] = list(members)
        return resolved[name]

    for name in listing:
        if name != "_meta":
            hosts_of(name, ())
    return resolved


def host_vars(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Host name -> its variables after every Ansible precedence rule (`_meta.hostvars`)."""
    meta = listing.get("_meta") or {}
    return {str(name): dict(values or {}) for name, values in (meta.get("hostvars") or {}).items()}


def _fingerprint(sources: list[str]) -> tuple[Any, ...]:
    """What changes when a source or the vars Ansible reads beside it changes."""
    seen: list[Any] = []
    for source in sources:
        path = Path(source)
        watched = [path]
        if path.is_file():
            watched += [path.parent / "group_vars", path.parent / "host_vars"]
        for item in watched:
            seen.append((str(item), *_tree_stat(item)))
    return tuple(seen)


def _tree_stat(path: Path) -> tuple[Any, ...]:
    try:
        if not path.is_dir():
            stat = path.stat()
            return (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        return tuple(
            (str(item), item.stat().st_mtime_ns, item.stat().st_size)
            for item in sorted(path.rglob("*"))
        )
    except OSError:
        return ("missing",)


@dataclass
class _Entry:
    fingerprint: tuple[Any, ...]
    read_at: float
    value: Any
    warnings: list[str]


class SourceCache:
    """Parsed inventories per (sources, limit), read again when a source changes.

    A 10,000-host inventory takes seconds to read and a rollout asks once per cluster, so a
    reading is kept until a file (or the group_vars/host_vars beside it) changes, and at most
    MAX_AGE_SECONDS (a plugin source, e.g. a cloud inventory, changes with no file changing).
    At most MAX_ENTRIES readings (sources and --limit patterns) are kept, the oldest dropped.
    Thread-safe; `loads` counts real readings.
    """

    def __init__(self, max_age: float = MAX_AGE_SECONDS) -> None:
        self._max_age = max_age
        self._entries: dict[tuple[tuple[str, ...], str | None], _Entry] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, sources: list[str], limit: str | None, parse: Callable[[dict[str, Any]], T]) -> T:
        """`parse(run_ansible_inventory(sources, limit))`, or the kept result when unchanged."""
        key = (tuple(sources), limit)
        with self._lock:
            fingerprint = _fingerprint(sources)
            entry = self._entries.get(key)
            now = time.monotonic()
            if entry and entry.fingerprint == fingerprint and now - entry.read_at < self._max_age:
                return entry.value
            listing = run_ansible_inventory(sources, limit)
            try:
                value = parse(listing)
            except InventoryError as error:
                raise InventoryError(f"inventory {', '.join(sources)}: {error}") from None
            self.loads += 1
            self._entries.pop(key, None)
            self._entries[key] = _Entry(fingerprint, now, value, listing["_meta"]["warnings"])
            while len(self._entries) > MAX_ENTRIES:
                self._entries.pop(next(iter(self._entries)))
            return value

    def warnings(self, sources: list[str], limit: str | None) -> list[str]:
        """Ansible's warnings from the kept reading of (sources, limit); [] if none is kept."""
        with self._lock:
            entry = self._entries.get((tuple(sources), limit))
            return list(entry.warnings) if entry else []
