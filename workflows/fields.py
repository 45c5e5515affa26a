"""The field types of the contract: what a name, an e-mail, a command or a host count may be.

Every value that later reaches a shell, a workflow id or a file path is checked here, once, when a
model is built; `ContractModel` gives every model the spec's camelCase names on the wire.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_camel

from workflows.policy import visible_problem

# Names end up in shell commands, workflow ids and file paths: keep them boring on purpose.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
SERVICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$"
SECRET_PREFIX_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"
EMAIL_PATTERN = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MAX_COMMAND_LENGTH = 8192


def _check_name(value: str, what: str, pattern: str) -> str:
    if not re.fullmatch(pattern, value):
        raise ValueError(
            f"{what} {value[:80]!r} is not allowed: use letters, digits, '.', '_' or '-' "
            f"(starting with a letter or digit, at most {63 if pattern == NAME_PATTERN else 128} "
            "characters); shell metacharacters and spaces are refused"
        )
    return value


def _cluster_name(value: str) -> str:
    return _check_name(value, "cluster name", NAME_PATTERN)


def _host_name(value: str) -> str:
    # An inventory may name a host by its IPv6 literal (Ansible accepts `2001:db8::5`); hex
    # digits and colons are as harmless in a workflow id or a Vault path as the name pattern.
    if ":" in value and len(value) <= 45:
        try:
            ipaddress.IPv6Address(value)
            return value
        except ValueError:
            pass
    return _check_name(value, "host name", NAME_PATTERN)


def _service_name(value: str) -> str:
    return _check_name(value, "service name", SERVICE_PATTERN)


def _email(value: str) -> str:
    value = value.strip()
    if len(value) > 254 or not EMAIL_PATTERN.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a valid e-mail address")
    return value.lower()


def _shell_command(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    if len(value) > MAX_COMMAND_LENGTH:
        raise ValueError(f"is {len(value)} characters long; the limit is {MAX_COMMAND_LENGTH}")
    # What approvers read must be what the shell runs: no bidi overrides, zero-width or control
    # characters, no run of blanks pushing a `; curl …` tail out of sight (issue 13).
    hidden = visible_problem(value)
    if hidden:
        raise ValueError(f"does not read as what runs: {hidden}")
    return value


def host_pattern(value: str) -> str:
    """An Ansible `--limit` host pattern (`web[01:05]`, `cluster-a:&dc1`, `!a3`), stripped.

    Ansible evaluates it (docs.ansible.com, "Patterns: targeting hosts and groups"); refused here
    is what Ansible would read as something else: `@file` reads a file on the worker. Raises
    ValueError saying why.
    """
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if len(value) > 1000:
        raise ValueError(f"is {len(value)} characters long; the limit is 1000")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("must not contain control characters")
    if any(part.strip().startswith("@") for part in value.split(",")):
        raise ValueError("must not name a file (@...): list the hosts or groups instead")
    return value


ClusterName = Annotated[str, AfterValidator(_cluster_name)]
HostPattern = Annotated[str, AfterValidator(host_pattern)]
HostName = Annotated[str, AfterValidator(_host_name)]
ServiceName = Annotated[str, AfterValidator(_service_name)]
Email = Annotated[str, AfterValidator(_email)]
ShellCommand = Annotated[str, AfterValidator(_shell_command)]


class ContractModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are an error, not a surprise."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration (seconds or ISO 8601, e.g. 'PT30M')")
    return value


PositiveDuration = Annotated[timedelta, AfterValidator(_positive)]


def _host_count(value: object, *, minimum: int, maximum: int = 100_000) -> int | str:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number of hosts")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        number = int(value)
        if not minimum <= number <= maximum:
            raise ValueError(f"{number} must be between {minimum} and {maximum} hosts")
        return number
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d{1,3})\s*%\s*", value)
        if match and minimum <= int(match.group(1)) <= 100:
            return f"{int(match.group(1))}%"
    raise ValueError(
        f"{str(value)[:40]!r} is neither a whole number of hosts nor a percentage of the "
        f"cluster like '25%' ({minimum}% to 100%)"
    )


# A number of hosts, or a percentage of the cluster ("25%"); see workflows.planning.resolve_amount.
HostCount = Annotated[int | str, BeforeValidator(lambda v: _host_count(v, minimum=0))]
PositiveHostCount = Annotated[
    int | str, BeforeValidator(lambda v: _host_count(v, minimum=1, maximum=1000))
]


RebootPolicy = Literal["if-required", "always", "never"]


def describe_validation_error(error: Any) -> str:
    """One line per problem, naming the camelCase field, for CLI and chat users."""
    lines = []
    for problem in error.errors():
        location = ""
        for part in problem["loc"]:
            location += f"[{part}]" if isinstance(part, int) else f".{to_camel(str(part))}"
        location = location.lstrip(".")
        message = problem["msg"].removeprefix("Value error, ")
        if not location and re.match(r"^[a-z][A-Za-z]*(\[\d+\])?: ", message):
            lines.append(message)  # a whole-input rule that already names its field
        else:
            lines.append(f"{location or 'input'}: {message}")
    return "\n".join(lines)
