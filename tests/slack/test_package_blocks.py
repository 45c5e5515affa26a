"""The per-host package report as the Slack thread, the e-mail, Teams and the JSON webhook show it
(issue 15, item 6), as pure functions: one short line per host, the whole report behind the
"Packages" button's modal, what hosts print escaped so it never becomes a mention or a link, and
reports of hundreds of packages counted rather than refused. Slack's limits are the stand-in's
rules (lab/slack_standin/rules.py), written from Slack's documentation."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping

import pytest

from activities.notify import messages
from activities.notify.packages import email_section, short_line, with_packages
from activities.notify.teams import SIZE_BUDGET, TeamsNotifier, envelope, size_of, summary_card
from activities.notify.webhook import payload
from bot.slack import package_blocks
from bot.slack.blocks import as_dicts, summary_head
from bot.slack.client import web_client
from bot.slack.notifier import SlackNotifier, thread_blocks
from lab.slack_standin import SlackStandIn
from lab.slack_standin.rules import block_kit_error, block_texts, view_error
from tests.slack.test_pacing import CHANNEL, FAST
from tests.slack.test_pacing import notice as fast_notice
from workflows.models import (
    HostInspection,
    HostPatchResult,
    HostProgress,
    HostState,
    Phase,
    RolloutNotice,
    RolloutSummary,
)
from workflows.packages import KeptBack, PackageChange, PackageReport, UnfinishedPackage

HOSTILE = "<!channel> see <http://x.example|y> & <@U0ALICE01>"


def report() -> PackageReport:
    return PackageReport(
        upgraded=[
            PackageChange(name="pp-hello", old="1.0", new="1.1"),
            PackageChange(name="pp-reboot", old="1.0", new="1.1"),
        ],
        installed=[PackageChange(name="pp-new", new="2.0")],
        removed=[PackageChange(name="pp-old", old="0.9")],
        kept_back=[KeptBack(name="pp-held", reason=HOSTILE)],
        held=["pp-held"],
        reboot_required=True,
        reboot_packages=["pp-reboot"],
        conffiles=["/etc/pp-conf/pp-conf.conf.dpkg-dist"],
    )


def huge(n: int) -> PackageReport:
    return PackageReport(
        upgraded=[
            PackageChange(name=f"lib{i:04d}-<b>&", old=f"1.{i}", new=f"1.{i}+deb12u1")
            for i in range(n)
        ]
    )


def summary(
    hosts: Mapping[str, str | None], dry_run: list[HostInspection] | None = None
) -> RolloutSummary:
    return RolloutSummary(
        rollout_id="rollout-7",
        phase=Phase.DRY_RUN_DONE if dry_run is not None else Phase.SUCCEEDED,
        patched=len(hosts),
        failed=0,
        skipped=0,
        duration_seconds=42,
        message="all hosts patched",
        hosts=[
            HostProgress(name=h, cluster="apt", state=HostState.DONE, packages=line)
            for h, line in hosts.items()
        ],
        dry_run=dry_run,
    )


def notice(**extra: object) -> RolloutNotice:
    return RolloutNotice.model_validate(
        {
            "rolloutId": "rollout-7",
            "requesterEmail": "bob@example.com",
            "approverEmails": ["alice@example.com"],
            "targetClusters": ["apt"],
            **extra,
        }
    )


def test_the_short_line_says_what_changed_and_what_needs_a_person() -> None:
    assert short_line(report()) == (
        "2 upgraded, 1 installed, 1 removed, 1 kept back, 1 held; reboot required (pp-reboot); "
        "1 conffile left (.dpkg-dist/.dpkg-old)"
    )
    assert short_line(PackageReport()) == "no package changed"
    half = PackageReport(
        unfinished=[UnfinishedPackage(name="pp-fail", version="1.1", state="half-configured")],
        reboot_required=True,
        reboot_packages=["linux-image-6.1.0-28-amd64", "linux-image-6.1.0-29-amd64", "libc6"],
    )
    assert short_line(half) == (
        "1 UNFINISHED (pp-fail half-configured); no package changed; "
        "reboot required (linux-image-6.1.0-28-amd64, linux-image-6.1.0-29-amd64 +1)"
    )


def test_a_hosts_success_shows_its_line_and_the_button_and_host_text_stays_text() -> None:
    success = messages.success_notice(
        notice(hostname="p1", cluster="apt", slackChannel="C1", slackThreadTs="1.2")
    )
    shown = thread_blocks(with_packages(success, {"p1": report()}))
    assert shown is not None and block_kit_error({"blocks": shown}) is None
    [section] = shown
    read = block_texts([section["text"]])
    assert read[0] == (
        ":white_check_mark: *p1* (apt) patched: services healthy, out of maintenance mode\n"
        f":package: {short_line(report())}"
    )
    assert section["accessory"]["action_id"] == package_blocks.PACKAGES_ACTION
    assert package_blocks.read_value(section["accessory"]["value"]) == ("rollout-7", ["p1"], False)
    # Without a report (no dpkg on the host) the success stays the text it always was.
    assert thread_blocks(success) is None


def test_the_modal_lists_every_fact_and_a_hostile_reason_arrives_as_text() -> None:
    result = HostPatchResult(hostname="p1", ok=True, step="done", packages=report())
    failed = HostPatchResult(hostname="p2", ok=False, step="preconditions")
    broken = HostPatchResult(
        hostname="p3",
        ok=False,
        step="update",
        failure_reason="dpkg: error processing package pp-fail (--configure) … UNFINISHED pp-fail "
        "1.1 (half-configured)",
    )
    view = package_blocks.packages_view(
        "rollout-7",
        [package_blocks.HostPackages.of_result(r) for r in (result, failed, broken)],
    )
    assert view_error(view) is None and view["title"]["text"] == "Packages"
    raw = json.dumps(view)
    assert "<!channel>" not in raw and "<http" not in raw and "<@U0ALICE01>" not in raw
    shown = "\n".join(block_texts(view["blocks"]))
    for line in (
        "*p1* · done",
        "*Upgraded (2)*",
        "• pp-hello 1.0 → 1.1",
        "• pp-new 2.0",
        "• pp-old 0.9",
        f"• pp-held: {HOSTILE}",  # rendered: exactly what apt said, as characters
        "*Held (1)*\n• pp-held",
        "*Reboot required (1)*\n• because of pp-reboot",
        "• /etc/pp-conf/pp-conf.conf.dpkg-dist",
        "*p2* · failed at preconditions\nno package report (the update did not run, or the "
        "host has no dpkg)",
        "*p3* · failed at update\nno package report (the update failed: dpkg: error processing "
        "package pp-fail (--configure) … UNFINISHED pp-fail 1.1 (half-configured))",
    ):
        assert line in shown, line
    assert "more" not in shown


@pytest.mark.parametrize(("hosts", "packages"), [(1, 5000), (30, 900), (120, 50)])
def test_reports_of_thousands_of_packages_are_counted_within_slacks_limits(
    hosts: int, packages: int
) -> None:
    view = package_blocks.packages_view(
        "rollout-7",
        [
            package_blocks.HostPackages.of_result(
                HostPatchResult(hostname=f"h{i:03d}", ok=True, packages=huge(packages))
            )
            for i in range(hosts)
        ],
    )
    assert view_error(view) is None  # 100 blocks, 3,000 characters a section, 250 KB
    shown = "\n".join(block_texts(view["blocks"]))
    assert "• lib0000-<b>& 1.0 → 1.0+deb12u1" in shown  # names escaped, read as they are
    # Every package is either listed or counted, and each count says where all of them are.
    listed = shown.count("\n• lib")
    per_host = re.findall(r"… and (\d+) more of h\d+; `patchpilot report rollout-7` has all", shown)
    past = re.findall(
        r"… and (\d+) more hosts \((\d+) package lines\): a modal holds only so "
        r"much; `patchpilot report rollout-7` has all",
        shown,
    )
    assert listed + sum(map(int, per_host)) + sum(int(p[1]) for p in past) == hosts * packages
    # One host's thousands never hide the others: each shown host has its line and some facts.
    named = re.findall(r"\*(h\d+)\* · done\n5?\d+ upgraded\n\*Upgraded \(\d+\)\*\n• lib", shown)
    assert len(named) + sum(int(p[0]) for p in past) == hosts and len(named) >= min(hosts, 40)


def test_a_batch_of_successes_lines_up_each_host_within_one_message() -> None:
    lines = {f"host-{i:03d}": short_line(report()) for i in range(200)}
    built = as_dicts(package_blocks.batch_blocks(":white_check_mark: 200 patched", lines, "r-1"))
    assert block_kit_error({"blocks": built}) is None
    text = block_texts(built)[1]
    assert text.startswith("• *host-000*: 2 upgraded")
    assert text.splitlines()[-1].endswith("more hosts: the Packages button shows them")
    # 200 host names do not fit a button's value: it opens the whole rollout's report.
    value = built[2]["elements"][0]["value"]
    assert package_blocks.read_value(value) == ("r-1", [], False)


def test_the_summary_collapses_each_host_and_a_dry_run_shows_what_would_change() -> None:
    done = summary({"p1": "long line", "p2": None})
    message = with_packages(
        messages.rollout_summary(notice(summary=done)), {"p1": report(), "p2": huge(3)}
    )
    shown = thread_blocks(message)
    assert shown is not None and block_kit_error({"blocks": shown}) is None
    read = block_texts(shown)
    assert read[0] == block_texts([{"type": "mrkdwn", "text": summary_head(done)}])[0]
    assert f"apt/p1: done\n    packages: {short_line(report())}" in read[1]
    assert "apt/p2: done\n    packages: 3 upgraded" in read[1]
    assert "<!channel>" not in json.dumps(shown)

    changes = ["upgrade pp-hello 1.0 → 1.1", "install pp-new 2.0", "remove pp-old 0.9"]
    dry = summary(
        {},
        [
            HostInspection(
                hostname="p1",
                cluster="apt",
                preconditions_ok=True,
                pending_updates=["pp-hello"],
                would_change=changes,
            )
        ],
    )
    shown = thread_blocks(messages.rollout_summary(notice(summary=dry)))
    assert shown is not None
    assert (
        "apt/p1: ok; 1 pending updates; reboot unknown; would upgrade 1, install 1, remove 1"
        in (block_texts(shown)[1])
    )
    value = shown[2]["elements"][0]["value"]
    assert package_blocks.read_value(value) == ("rollout-7", [], True)
    found = dry.dry_run or []
    view = package_blocks.packages_view(
        "rollout-7", [package_blocks.HostPackages.of_inspection(f) for f in found], dry_run=True
    )
    assert view_error(view) is None
    assert "• upgrade pp-hello 1.0 → 1.1\n• install pp-new 2.0" in "\n".join(
        block_texts(view["blocks"])
    )


def test_the_summary_email_has_a_packages_section_with_every_fact() -> None:
    done = summary({"p1": "x", "p2": None, "p3": "upgraded 1 (the line the summary kept)"})
    message = with_packages(
        messages.rollout_summary(notice(summary=done)), {"p1": report(), "p2": huge(2500)}
    )
    body = message.body
    assert body.startswith(messages.summary_text(done))
    section = body[len(messages.summary_text(done)) :]
    assert section.startswith(
        "\nPackages (what the update did on each host; `patchpilot report rollout-7` has all, "
        "also as JSON or CSV):\n"
    )
    for line in (
        f"  apt/p1: {short_line(report())}\n",
        "    Upgraded (2):\n      pp-hello 1.0 → 1.1\n      pp-reboot 1.0 → 1.1\n",
        f"    Kept back (1):\n      pp-held: {HOSTILE}\n",
        "    Reboot required (1):\n      because of pp-reboot\n",
        "    Conffiles left beside the host's own (1):\n"
        "      /etc/pp-conf/pp-conf.conf.dpkg-dist\n",
        "  apt/p2: 2500 upgraded\n",
        "      … and 500 more; `patchpilot report rollout-7` has all, also as JSON or CSV\n",
        "  apt/p3: upgraded 1 (the line the summary kept)\n",
    ):
        assert line in section, line
    assert email_section(summary({"p1": None}), {}, "hint") == ""


def test_teams_and_the_webhook_carry_the_reports() -> None:
    hosts = {f"h{i:04d}": None for i in range(2000)}
    done = summary(hosts)
    reports = {h: report() for h in hosts}
    card = summary_card(notice(summary=done), done, reports)
    assert size_of(envelope(card)) <= SIZE_BUDGET
    text = card["body"][-1]["text"]
    assert f"apt/h0000: done\npackages: {short_line(report())}" in text
    assert "more hosts (patchpilot status rollout-7)" in text
    success = with_packages(
        messages.success_notice(notice(hostname="p1", cluster="apt")), {"p1": report()}
    )
    facts = TeamsNotifier(url="https://teams.example/hook").card(success)["body"][1]["facts"]
    assert {"title": "Packages", "value": short_line(report())} in facts
    sent = payload(success)
    assert sent["packages"]["p1"]["upgraded"][0] == {"name": "pp-hello", "old": "1.0", "new": "1.1"}
    assert sent["packages"]["p1"]["keptBack"][0]["reason"] == HOSTILE
    assert f"Packages: {short_line(report())}\n  upgraded pp-hello 1.0 → 1.1\n" in sent["text"]


async def test_successes_batched_by_the_pacing_rule_each_keep_their_line_through_slack() -> None:
    async with SlackStandIn(channels={CHANNEL}) as slack:
        client = web_client(slack.bot_token, slack.api_url)
        ts = str((await client.chat_postMessage(channel=CHANNEL, text="card"))["ts"])
        notifier = SlackNotifier(client, pacing=FAST)
        await asyncio.sleep(1.0)  # the card's post is paid back
        hostile = PackageReport(kept_back=[KeptBack(name="pp-x", reason=HOSTILE)])
        sent = [
            notifier.send(
                with_packages(
                    messages.success_notice(fast_notice(ts, f"a{i}")),
                    {f"a{i}": hostile if i == 4 else report()},
                )
            )
            for i in range(1, 7)
        ]
        assert all(await asyncio.gather(*sent))
        await asyncio.sleep(2.0)  # the batch's flush
        first, batch = slack.thread(CHANNEL, ts)
        assert first["blocks"][0]["accessory"]["action_id"] == package_blocks.PACKAGES_ACTION
        assert batch["text"] == ":white_check_mark: 5 patched (cluster-a): a2, a3, a4, a5, a6"
        lines = block_texts([batch["blocks"][1]["text"]])[0]
        assert lines.splitlines() == [
            f"• *a{i}*: {short_line(hostile if i == 4 else report())}" for i in range(2, 7)
        ]
        assert "<!channel>" not in json.dumps(batch["blocks"])  # Slack took it as text
        value = batch["blocks"][2]["elements"][0]["value"]
        assert package_blocks.read_value(value) == (
            "patch-cluster-a-1",
            ["a2", "a3", "a4", "a5", "a6"],
            False,
        )
        assert slack.throttled == []


def test_the_webhook_carries_as_many_whole_reports_as_fit_and_counts_the_rest() -> None:
    reports = {f"h{i:03d}": huge(400) for i in range(300)}
    done = summary(dict.fromkeys(reports))
    sent = payload(with_packages(messages.rollout_summary(notice(summary=done)), reports))
    carried = len(json.dumps(sent["packages"]).encode())
    assert 0 < len(sent["packages"]) < 300 and carried <= 512 * 1024
    assert sent["packagesLeftOut"] == 300 - len(sent["packages"])
    assert len(sent["packages"]["h000"]["upgraded"]) == 400  # a host's report is whole or out
