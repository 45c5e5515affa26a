"""Gate templating with hostile names (issue 18): values are quoted, never injected; and the
canary judgement says why it passed or held."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workflows.gates import Bound, GateError, alternatives, fill, judge, quote_regex

MATCHERS = 'alertname=~"HighErrorRate|NodeDown", cluster="{cluster}", instance=~"{host}.*"'


def test_matchers_are_filled_as_the_issue_shows() -> None:
    filled = fill(MATCHERS, {"cluster": "cluster-a", "host": "web01.example.com"})
    assert filled == (
        'alertname=~"HighErrorRate|NodeDown", cluster="cluster-a", '
        'instance=~"web01\\\\.example\\\\.com.*"'
    )


def test_host_lists_become_an_exact_alternation_inside_a_regex_matcher() -> None:
    expression = 'sum(rate(http_errors_total{instance=~"{hosts}"}[5m]))'
    filled = fill(expression, {"hosts": ["a1.dc", "a2.dc"]})
    assert filled == 'sum(rate(http_errors_total{instance=~"a1\\\\.dc|a2\\\\.dc"}[5m]))'
    with pytest.raises(GateError, match="lists hosts: use it in a regex matcher"):
        fill('up{instance="{hosts}"}', {"hosts": ["a1"]})
    with pytest.raises(GateError, match="would match every series"):
        fill('up{instance=~"{baseline}"}', {"baseline": []})


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("up{instance={host}}", "outside a quoted value"),
        ('up{job="x"} or {host}', "outside a quoted value"),
        ('up{instance="{host}', "is not closed"),
        ('up{instance="{cluster}"}', "{cluster} has no value here"),
    ],
)
def test_a_placeholder_that_could_inject_syntax_is_refused(template: str, message: str) -> None:
    with pytest.raises(GateError) as refused:
        fill(template, {"host": "a1"})
    assert message in str(refused.value)


HOSTILE = [
    'a1"} or vector(1) or up{x="',
    "a1\\",
    "a1\n}",
    ".*",
    "a1|a2",
    "x'y",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_stay_inside_their_string(name: str) -> None:
    filled = fill('up{cluster="{cluster}", instance=~"{host}"}', {"cluster": name, "host": name})
    # Exactly the two strings the template had: nothing escaped out of them.
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', filled)
    assert len(strings) == 2
    assert filled.startswith('up{cluster="') and filled.endswith('"}')
    assert " or " not in filled.replace(strings[0], "").replace(strings[1], "")


@given(st.text(min_size=1, max_size=30))
def test_a_quoted_name_matches_exactly_itself(name: str) -> None:
    pattern = re.compile(quote_regex(name), re.DOTALL)  # RE2's metacharacters are Python's too
    assert pattern.fullmatch(name)
    assert not pattern.fullmatch(name + "x")
    assert re.fullmatch(alternatives([name, "other"]), name, re.DOTALL)


def test_the_canary_judgement_gives_its_numbers() -> None:
    bound = Bound(factor=1.2, offset=0.01, min_samples=3)
    ok = judge("error rate", 0.05, 0.05, (5, 5), bound)
    assert ok.passed and ok.reason == (
        "error rate: patched 0.05 within the bound 0.07 (baseline 0.05 * 1.2 + 0.01)"
    )
    bad = judge("error rate", 0.2, 0.05, (5, 5), bound)
    assert not bad.passed and "patched 0.2 above the bound 0.07" in bad.reason
    blind = judge("error rate", 0.01, 0.05, (2, 5), bound)
    assert not blind.passed and "not enough data (samples 2 patched, 5 baseline; 3 needed)" in (
        blind.reason
    )
    assert not judge("error rate", None, 0.05, (5, 5), bound).passed
