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
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator

from workflows.fields import ContractModel, PositiveDuration

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
    filled) and the cluster / host they are asked about; `hosts` are the cluster's hosts patched
    so far (`{hosts}`, and `{host}` for each of them when `host` is not given)."""

    matchers: str
    cluster: str
    host: str | None = None
    hosts: list[str] = Field(default_factory=list)


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


# ---- what a rollout or a cluster asks for -------------------------------------------------------

# Outside its quoted values a matcher is label names, operators, commas and spaces: nothing that
# could close the `ALERTS{...}` selector it is placed in.
MATCHER_SYNTAX = re.compile(r"^[A-Za-z0-9_\s=~!,]*$")
SAMPLE_VALUES: dict[str, str | Sequence[str]] = {
    "cluster": "c",
    "host": "h",
    "hosts": ["h"],
    "baseline": ["b"],
}
# `EXPR <= baseline [* FACTOR] [+ OFFSET] [min N]`, the one-line form of a gate query.
_NUMBER = r"[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?"
QUERY_LINE = re.compile(
    rf"^(?P<expression>.+?)\s*<=\s*baseline\s*(?:\*\s*(?P<factor>{_NUMBER}))?\s*"
    rf"(?:\+\s*(?P<offset>{_NUMBER}))?\s*(?:min\s+(?P<min_samples>\d+))?\s*$",
    re.DOTALL,
)


def _alert_matcher(value: str) -> str:
    """One alert selector's matchers, e.g. `alertname=~"HighErrorRate|NodeDown",
    cluster="{cluster}"`; ValueError saying why it cannot be used."""
    value = value.strip()
    if not value or len(value) > 2000:
        raise ValueError('must be 1 to 2000 characters of matchers, e.g. cluster="{cluster}"')
    if "{baseline}" in value:
        raise ValueError("{baseline} is for gate queries; matchers take {cluster}, {host}, {hosts}")
    try:
        fill(value, SAMPLE_VALUES)
    except GateError as error:
        raise ValueError(str(error)) from None
    outside = re.sub(r'"(?:[^"\\]|\\.)*"', "", value)
    if not MATCHER_SYNTAX.match(outside):
        raise ValueError(
            f'{value[:80]!r} must be matchers only (label="value", label=~"regex", …, '
            "comma-separated); braces and other syntax outside quoted values are refused"
        )
    return value


AlertMatcher = Annotated[str, AfterValidator(_alert_matcher)]


def _non_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must be zero or a positive duration (seconds or ISO 8601, e.g. 'PT10M')")
    return value


SoakDuration = Annotated[timedelta, AfterValidator(_non_negative)]


class GateQuery(ContractModel):
    """One canary expression and its bound: the gate passes when the expression's value for the
    hosts just patched is at most baseline * factor + offset (the baseline: the same expression
    over the cluster's still-unpatched hosts), with at least `minSamples` hosts reporting on each
    side. `{hosts}` stands for either side, in a regex matcher (`host=~"{hosts}"`).

    Also read from one line: `avg(rate(errors_total{host=~"{hosts}"}[1m])) <= baseline * 1.2 +
    0.01 min 2` (factor, offset and min optional)."""

    expression: str = Field(min_length=1, max_length=4000)
    factor: float = Field(default=1.0, ge=0, le=1e6)
    offset: float = Field(default=0.0, ge=-1e12, le=1e12)
    min_samples: int = Field(default=1, ge=1, le=100_000)

    @model_validator(mode="before")
    @classmethod
    def _one_line(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        found = QUERY_LINE.match(value.strip())
        if found is None:
            raise ValueError(
                f"{value[:80]!r} must read 'EXPRESSION <= baseline [* FACTOR] [+ OFFSET] [min N]',"
                " e.g. 'avg(error_rate{host=~\"{hosts}\"}) <= baseline * 1.2 + 0.01 min 1'"
            )
        return {key: item for key, item in found.groupdict().items() if item is not None}

    @field_validator("expression")
    @classmethod
    def _fills_safely(cls, value: str) -> str:
        if "{baseline}" in value:
            raise ValueError(
                "is evaluated once for the hosts just patched and once for their unpatched "
                "baseline, {hosts} standing for each in turn: write {hosts}, not {baseline}"
            )
        if "{hosts}" not in value:
            raise ValueError(
                'must use {hosts} (e.g. host=~"{hosts}"): without it the patched hosts and their '
                "baseline would be the same series"
            )
        try:
            fill(value, SAMPLE_VALUES)
        except GateError as error:
            raise ValueError(str(error)) from None
        return value

    @property
    def bound(self) -> Bound:
        return Bound(factor=self.factor, offset=self.offset, min_samples=self.min_samples)

    def describe(self) -> str:
        """The one-line form, as people write it."""
        return (
            f"{self.expression} <= baseline * {self.factor:g} + {self.offset:g} "
            f"min {self.min_samples}"
        )


class GateSettings(ContractModel):
    """A cluster's gates between waves: the rollout's own fields where it sets them, else the
    cluster's inventory group vars (`patchpilot_soak_time`, `patchpilot_gate_timeout`,
    `patchpilot_alert_matchers`, `patchpilot_gate_queries`)."""

    soak_time: SoakDuration | None = None
    gate_timeout: PositiveDuration | None = None
    alert_matchers: list[AlertMatcher] = Field(default_factory=list, max_length=20)
    gate_queries: list[GateQuery] = Field(default_factory=list, max_length=20)

    @property
    def asks_prometheus(self) -> bool:
        """True when a gate needs the worker's Prometheus (alert matchers or queries)."""
        return bool(self.alert_matchers or self.gate_queries)

    @property
    def active(self) -> bool:
        return self.asks_prometheus or bool(self.soak_time)

    def under(self, own: GateSettings) -> GateSettings:
        """These (a cluster's) settings with `own` (the rollout's) winning where it sets one."""
        return GateSettings(
            soak_time=own.soak_time if own.soak_time is not None else self.soak_time,
            gate_timeout=own.gate_timeout or self.gate_timeout,
            alert_matchers=own.alert_matchers or self.alert_matchers,
            gate_queries=own.gate_queries or self.gate_queries,
        )
