"""Health gates between waves (issue 18), the pure part: filling `{cluster}`, `{host}`, `{hosts}`
and `{baseline}` into Prometheus alert matchers and PromQL expressions without ever letting a
name change the expression, and judging a canary against its baseline.

Placeholders are only allowed inside double-quoted PromQL strings (a matcher's value), where a
value is escaped as a PromQL string literal (Go escaping, the PromQL docs' "String literals"); in
a regular-expression matcher (`=~`, `!~`) it is first quoted as an RE2 literal, so a host name's
`.` matches only a dot. A placeholder anywhere else is refused: it could only inject syntax.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import Field

from workflows.fields import ContractModel

PLACEHOLDER = re.compile(r"\{(cluster|host|hosts|baseline)\}")
# RE2 metacharacters (Go's regexp.QuoteMeta escapes exactly these).
RE2_SPECIAL = set("\\.+*?()|[]{}^$")


class GateError(ValueError):
    """A matcher or expression that cannot be filled safely; the message says where and why."""


def quote_regex(text: str) -> str:
    """`text` as an RE2 pattern matching exactly it (Go's regexp.QuoteMeta)."""
    return "".join("\\" + char if char in RE2_SPECIAL else char for char in text)


def string_literal_body(text: str) -> str:
    """`text` escaped for the inside of a double-quoted PromQL string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def alternatives(names: Sequence[str]) -> str:
    """An RE2 pattern matching exactly one of `names` (each quoted); `names` must not be empty,
    since an empty alternation would match everything."""
    if not names:
        raise GateError("no hosts to match: an empty pattern would match every series")
    return "|".join(quote_regex(name) for name in names)


def fill(template: str, values: Mapping[str, str | Sequence[str]]) -> str:
    """`template` with each placeholder replaced, escaped for the string it stands in.

    `values` maps "cluster"/"host" to a name and "hosts"/"baseline" to a list of names (joined
    as an alternation, so they belong in a `=~` matcher). Raises GateError for a placeholder
    outside a quoted string, a list placeholder in an exact matcher, an unknown or missing value,
    or an unterminated string.
    """
    out: list[str] = []
    index = 0
    while index < len(template):
        char = template[index]
        if char == '"':
            end = _string_end(template, index)
            operator = _operator_before(template, index)
            out.append('"' + _fill_string(template[index + 1 : end], operator, values) + '"')
            index = end + 1
            continue
        found = PLACEHOLDER.match(template, index)
        if found:
            raise GateError(
                f"{found.group()} at position {index} is outside a quoted value: write it as a "
                f'matcher value, e.g. instance=~"{found.group()}"'
            )
        out.append(char)
        index += 1
    return "".join(out)


def _string_end(template: str, start: int) -> int:
    index = start + 1
    while index < len(template):
        if template[index] == "\\":
            index += 2
            continue
        if template[index] == '"':
            return index
        index += 1
    raise GateError(f"the string starting at position {start} is not closed")


def _operator_before(template: str, start: int) -> str:
    found = re.search(r"(=~|!~|!=|=)\s*$", template[:start])
    return found.group(1) if found else ""


def _fill_string(body: str, operator: str, values: Mapping[str, str | Sequence[str]]) -> str:
    regex = operator in ("=~", "!~")

    def one(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in values:
            raise GateError(f"{{{name}}} has no value here")
        value = values[name]
        if isinstance(value, str):
            text = quote_regex(value) if regex else value
        elif regex:
            text = alternatives(list(value))
        else:
            raise GateError(f'{{{name}}} lists hosts: use it in a regex matcher (=~"{{{name}}}")')
        return string_literal_body(text)

    return PLACEHOLDER.sub(one, body)


@dataclass(frozen=True)
class Bound:
    """The canary passes when patched ≤ baseline * factor + offset, over at least `min_samples`
    samples on each side (e.g. error rate ≤ baseline * 1.2 + 0.01)."""

    factor: float = 1.0
    offset: float = 0.0
    min_samples: int = 1


@dataclass(frozen=True)
class Judgement:
    """A gate's decision and the numbers behind it, for the thread, the summary and the history."""

    passed: bool
    reason: str


def judge(
    expression: str,
    patched: float | None,
    baseline: float | None,
    samples: tuple[int, int],
    bound: Bound,
) -> Judgement:
    """Judge one expression's value for the patched hosts against the unpatched baseline.
    `samples` is (patched, baseline) sample counts. Too few samples, or no value, never passes:
    a gate that cannot see is a gate that holds."""
    if patched is None or baseline is None or min(samples) < bound.min_samples:
        return Judgement(
            False,
            f"{expression}: not enough data (samples {samples[0]} patched, {samples[1]} baseline; "
            f"{bound.min_samples} needed)",
        )
    limit = baseline * bound.factor + bound.offset
    verdict = "within" if patched <= limit else "above"
    return Judgement(
        patched <= limit,
        f"{expression}: patched {patched:g} {verdict} the bound {limit:g} "
        f"(baseline {baseline:g} * {bound.factor:g} + {bound.offset:g})",
    )


class AlertGateRequest(ContractModel):
    """Input of CheckAlertGateActivity: alert matchers as written by people (placeholders not yet
    filled) and the cluster / host they are asked about."""

    matchers: str
    cluster: str
    host: str | None = None


class FiringAlert(ContractModel):
    """One firing alert: its name and its labels, as Prometheus' ALERTS series carries them."""

    name: str
    labels: dict[str, str] = Field(default_factory=dict)


class AlertGateResult(ContractModel):
    """The alerts firing now for the matchers (empty: the gate is open)."""

    firing: list[FiringAlert] = Field(default_factory=list)


class QueryGateRequest(ContractModel):
    """Input of QueryGateActivity: one PromQL expression with `{hosts}`, evaluated once for the
    hosts just patched and once for the still-unpatched baseline of the same cluster."""

    expression: str
    patched: list[str]
    baseline: list[str]


class QueryGateResult(ContractModel):
    """The expression's value for each side (None: no data) and how many hosts of each side
    Prometheus scrapes successfully (`up == 1`): the samples behind the values."""

    patched: float | None
    baseline: float | None
    patched_samples: int
    baseline_samples: int
