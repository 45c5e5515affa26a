"""Reading the approval policy file (`PATCHPILOT_POLICY`): YAML in, a checked `Policy` out.

The worker and the bot each read their own copy; nothing about the policy travels in rollout
input. What the document may say, and the rules that answer questions about it, are in
`workflows/policy.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncssh
import yaml

from workflows.policy import Policy, PolicyError


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last one
    silently, which would let a second `approvers:` line override the first unnoticed."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise PolicyError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice")
        seen.add(key)
    return dict(loader.construct_pairs(node))


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def parse_policy(text: str, source: str = "policy") -> Policy:
    """A checked Policy from YAML `text`; PolicyError names `source`, the key and the reason
    (also for YAML syntax errors, with the line, and for SSH keys OpenSSH would not accept)."""
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except PolicyError as error:
        raise PolicyError(f"{source}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise PolicyError(f"{source}: {where}not valid YAML ({problem})") from None
    policy = Policy.from_mapping(document, source)
    owners = [(f"people.{person.name}", person.keys) for person in policy.people.values()]
    owners += [(f"frontends.{name}", keys) for name, keys in policy.frontends.items()]
    for owner, keys in owners:
        for index, line in enumerate(keys):
            try:
                asyncssh.import_public_key(line)
            except (asyncssh.KeyImportError, ValueError) as error:
                raise PolicyError(
                    f"{source}: {owner}.keys[{index}]: not a valid OpenSSH public key ({error})"
                ) from None
    return policy


def load_policy(path: Path) -> Policy:
    """The policy in the file at `path`; PolicyError when it cannot be read or is not valid."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"cannot read policy {path}: {error.strerror or error}") from None
    return parse_policy(text, str(path))
