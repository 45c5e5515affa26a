"""The per-host package report read from what the host printed (activities/package_report.py),
without a host: dpkg's changes, apt's kept-back list with its reasons, the reboot and conffile
lines, and a line that is none of these refused with what it was."""

from __future__ import annotations

import pytest

from activities.host_values import HostValueError
from activities.package_report import kept_back, parse_report
from workflows.packages import PackageReport

AFTER_OUTPUT = """upgraded pp-broken 1.0 1.1
unfinished pp-broken 1.1 F
held pp-held 1.0
upgraded pp-hello 1.0 1.1
installed pp-new 2.0
removed pp-old 0.9
reboot
reboot-package pp-reboot
conffile /etc/pp-conf/pp-conf.conf.dpkg-dist
"""
APT = """Reading package lists...
The following packages have been kept back:
  pp-held pp-big
The following packages will be upgraded:
  pp-hello
"""


def test_a_report_reads_every_kind_of_line() -> None:
    report = parse_report(AFTER_OUTPUT, APT, "h1")
    assert [(c.name, c.old, c.new) for c in report.upgraded] == [
        ("pp-broken", "1.0", "1.1"),
        ("pp-hello", "1.0", "1.1"),
    ]
    assert [(c.name, c.new) for c in report.installed] == [("pp-new", "2.0")]
    assert [(c.name, c.old) for c in report.removed] == [("pp-old", "0.9")]
    assert report.held == ["pp-held"] and report.reboot_required
    assert report.reboot_packages == ["pp-reboot"]
    assert report.unfinished[0].state == "half-configured"
    assert report.conffiles == ["/etc/pp-conf/pp-conf.conf.dpkg-dist"]
    assert report.summary_line() == (
        "upgraded 2, installed 1, removed 1, kept back 2, held 1; "
        "UNFINISHED pp-broken 1.1 (half-configured); reboot required by pp-reboot; "
        "conffiles left: /etc/pp-conf/pp-conf.conf.dpkg-dist"
    )
    assert ("upgraded", "pp-hello", "1.0", "1.1") in report.rows()
    assert "upgraded pp-hello 1.0 → 1.1" in report.lines()
    assert PackageReport.model_validate_json(report.model_dump_json()) == report


def test_kept_back_says_why() -> None:
    reasons = {k.name: k.reason for k in kept_back(APT, held=["pp-held"])}
    assert reasons["pp-held"] == "held (dpkg selection hold)"
    assert reasons["pp-big"].startswith("its upgrade needs other packages installed or removed")


def test_a_line_that_is_no_report_line_is_refused_with_what_it_was() -> None:
    with pytest.raises(HostValueError) as refused:
        parse_report("upgraded pp-hello 1.0\n", "", "h1")
    assert "the package report on h1 has a line that is not one: 'upgraded pp-hello 1.0'" in (
        refused.value.message
    )


def test_nothing_changed_is_an_empty_report() -> None:
    report = parse_report("", "", "h1")
    assert report == PackageReport() and report.lines() == []


FRENCH_APT = """Lecture des listes de paquets...
Les paquets suivants ont été conservés :
  pp-held pp-big
"""


def test_kept_back_is_read_in_the_c_locale_whatever_the_update_printed() -> None:
    """apt translates "kept back"; the report reads AFTER's C-locale `apt-get -s upgrade`
    instead of the update's own (here French) output, so the count never drops to 0."""
    after = "kept-read\nkept pp-held\nkept pp-big\ndeferred pp-phased\n"
    report = parse_report(after, FRENCH_APT, "h1")
    reasons = {k.name: k.reason for k in report.kept_back}
    assert set(reasons) == {"pp-held", "pp-big", "pp-phased"}
    assert reasons["pp-phased"] == "a phased update apt deferred on this host"
    # The update's own English list is not read once AFTER's read is there (it says nothing).
    assert parse_report("kept-read\n", APT, "h1").kept_back == []
