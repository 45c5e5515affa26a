"""A dry run patches nothing, so no summary of one may say "patched N": the counts read "ready,
refused, skipped" in every channel (the e-mail and `patchpilot status`, Slack, Teams), and the
summary's own `patched` is 0 for any script that reads the result."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from rich.console import Console

from activities.notify import messages
from activities.notify.teams import summary_card
from bot.cli.render import EventLog, Layout, render_progress
from bot.slack.blocks import cluster_line, summary_head
from workflows.models import (
    HostInspection,
    HostPatchResult,
    HostTarget,
    Phase,
    RolloutInput,
    RolloutNotice,
    RolloutProgress,
    RolloutSummary,
)
from workflows.state import RolloutState

NOW = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
NOTICE = RolloutNotice(rollout_id="r-9", requester_email="bob@example.com", target_clusters=["a"])


def ended(*, dry_run: bool) -> RolloutState:
    rollout = RolloutInput.model_validate(
        {
            "targetClusters": ["a"],
            "pilotHostCount": 0,
            "approverEmails": ["alice@example.com"],
            "requesterEmail": "bob@example.com",
            "updateCommand": "apt-get -y upgrade",
            "dryRun": dry_run,
        }
    )
    state = RolloutState(rollout, "r-9", NOW)
    hosts = [HostTarget(name=name, cluster="a", address="10.0.0.1") for name in ("a1", "a2", "a3")]
    state.add_cluster("a", hosts, [])
    for name, ok in (("a1", True), ("a2", False)):
        state.mark_started(name, NOW)
        if dry_run:
            reason = "" if ok else "service nginx on a2 is not healthy before patching"
            found = HostInspection(hostname=name, cluster="a", preconditions_ok=ok, reason=reason)
            state.record_inspection(found, NOW)
        else:
            state.record_result(HostPatchResult(hostname=name, ok=ok, step="done"), NOW)
    state.skip_pending()
    state.progress.phase = Phase.DRY_RUN_DONE if dry_run else Phase.FAILED
    return state


def summary(*, dry_run: bool) -> RolloutSummary:
    return ended(dry_run=dry_run).summary(NOW, dry_run=dry_run)


def shown_by_the_cli(progress: RolloutProgress) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(render_progress(progress, layout=Layout.CLUSTERS))
    EventLog(console).update(progress)
    return console.export_text()


def said_everywhere(found: RolloutSummary) -> dict[str, str]:
    card = summary_card(NOTICE, found)
    facts = next(part for part in card["body"] if part.get("type") == "FactSet")
    return {
        "status and e-mail body": messages.summary_text(found).splitlines()[2],
        "e-mail subject": messages.rollout_summary(
            NOTICE.model_copy(update={"summary": found})
        ).subject,
        "Slack": summary_head(found).splitlines()[0],
        "Teams": json.dumps({fact["title"]: fact["value"] for fact in facts["facts"]}),
    }


def test_no_channel_says_a_dry_run_patched_a_host() -> None:
    found = summary(dry_run=True)
    assert found.patched == 0 and found.counts() == [("ready", 1), ("refused", 1), ("skipped", 1)]
    said = said_everywhere(found)
    for channel, text in said.items():
        assert "patched" not in text.lower(), (channel, text)
    assert said["status and e-mail body"] == "ready 1, refused 1, skipped 1, duration 0s"
    assert said["e-mail subject"].endswith("(1 ready, 1 refused)")
    assert "ready 1, refused 1, skipped 1" in said["Slack"]
    assert '"Ready": "1", "Refused": "1", "Skipped": "1"' in said["Teams"]


def test_a_rollout_still_counts_patched_failed_skipped() -> None:
    found = summary(dry_run=False)
    assert found.counts() == [("patched", 1), ("failed", 1), ("skipped", 1)]
    said = said_everywhere(found)
    assert said["status and e-mail body"] == "patched 1, failed 1, skipped 1, duration 0s"
    assert said["e-mail subject"].endswith("(1 patched, 1 failed)")
    assert "patched 1, failed 1, skipped 1" in said["Slack"]
    assert '"Patched": "1", "Failed": "1", "Skipped": "1"' in said["Teams"]


def test_the_cli_views_say_ready_and_refused_for_a_dry_run() -> None:
    shown = shown_by_the_cli(ended(dry_run=True).progress)
    assert "patched" not in shown and " failed " not in shown, shown
    cancelled = ended(dry_run=True)
    cancelled.progress.phase = Phase.CANCELLED  # a dry run cancelled half-way is still one
    assert "patched" not in shown_by_the_cli(cancelled.progress)
    assert "1/3 ready" in shown and "✓ a/a1 ready" in shown and "✗ a/a2 refused at step" in shown
    shown = shown_by_the_cli(ended(dry_run=False).progress)
    assert "1/3 patched" in shown and "✓ a/a1 patched" in shown and "✗ a/a2 failed at step" in shown


def test_the_slack_card_and_the_teams_hosts_say_ready_and_refused_for_a_dry_run() -> None:
    state = ended(dry_run=True)
    (cluster,) = state.progress.clusters
    assert cluster_line(cluster, dry_run=state.progress.dry_run).startswith(
        "*a*: 1/3 ready · 1 refused · 1 skipped"
    )
    card = json.dumps(summary_card(NOTICE, state.summary(NOW, dry_run=True)))
    assert "a/a1: ready" in card and "a/a2: refused" in card and "failed" not in card
    real = ended(dry_run=False)
    assert cluster_line(real.progress.clusters[0]).startswith("*a*: 1/3 done · 1 failed")
