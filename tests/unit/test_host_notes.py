"""What the preconditions report but do not refuse (held packages, a reboot already pending, a
dpkg repaired: activities/doctor.py `Preflight.notes`) travels from the host's result into the
rollout's summary and is shown wherever the summary is: the e-mail and `patchpilot status`
(summary_text), the Slack thread (escaped: it is host text) and the Teams card."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from rich.console import Console

from activities.notify import messages
from activities.notify.teams import summary_card
from bot.cli.render import render_progress
from bot.slack import package_blocks
from bot.slack.blocks import as_dicts, summary_head, summary_message
from lab.slack_standin.rules import block_kit_error
from workflows.models import (
    ClusterProgress,
    HostPatchResult,
    HostTarget,
    Phase,
    RolloutInput,
    RolloutNotice,
    RolloutProgress,
)
from workflows.state import RolloutState

NOW = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
HELD = "held packages (left as they are): pp-held"
PENDING = "a reboot was already pending before this change (for linux-image-6.1.0-28-amd64)"
HOSTILE = "held packages (left as they are): <!channel>-pkg"  # what a host said, as it said it


def summary_of(notes: dict[str, list[str]]):
    rollout = RolloutInput.model_validate(
        {
            "targetClusters": ["apt"],
            "pilotHostCount": 1,
            "approverEmails": ["alice@example.com"],
            "requesterEmail": "bob@example.com",
            "updateCommand": "apt-get -y upgrade",
        }
    )
    state = RolloutState(rollout, "rollout-9", NOW)
    hosts = [HostTarget(name=name, cluster="apt", address="10.0.0.1") for name in notes]
    state.add_cluster("apt", hosts, [])
    for name, said in notes.items():
        state.mark_started(name, NOW)
        state.record_result(HostPatchResult(hostname=name, ok=True, step="done", notes=said), NOW)
    return state.summary(NOW, dry_run=False)


def test_the_notes_reach_the_summary_text_of_the_email_and_status() -> None:
    summary = summary_of({"p1": [HELD, PENDING], "p2": []})
    text = messages.summary_text(summary)
    assert f"  apt/p1: done\n      notes: {HELD}; {PENDING}\n  apt/p2: done\n" in text
    # Left out of the JSON when empty: 10,000 hosts' summaries stay small.
    hosts = json.loads(summary.model_dump_json())["hosts"]
    assert hosts[0]["notes"] == [HELD, PENDING] and "notes" not in hosts[1]


def test_the_slack_summary_shows_the_notes_escaped_and_teams_shows_them() -> None:
    summary = summary_of({"p1": [HOSTILE]})
    said = summary_message(summary)
    assert "notes: held packages (left as they are): &lt;!channel&gt;-pkg" in said
    assert "<!channel>" not in said
    built = as_dicts(package_blocks.summary_blocks(summary_head(summary), summary, {}))
    assert block_kit_error({"blocks": built}) is None
    assert "    notes: held packages (left as they are): &lt;!channel&gt;-pkg" in json.dumps(built)
    assert "<!channel>" not in json.dumps(built)
    notice = RolloutNotice(
        rollout_id="rollout-9", requester_email="bob@example.com", target_clusters=["apt"]
    )
    card = summary_card(notice, summary)
    assert f"apt/p1: done\nnotes: {HOSTILE}" in card["body"][-1]["text"]


def test_patchpilot_status_shows_the_notes_in_the_hosts_note_column() -> None:
    marked = "held packages (left as they are): [red]pp-x[/red]"  # rich markup, from a host
    summary = summary_of({"p1": [marked, PENDING]})
    progress = RolloutProgress(
        rollout_id="rollout-9",
        phase=Phase.SUCCEEDED,
        requester_email="bob@example.com",
        approver_emails=["alice@example.com"],
        clusters=[ClusterProgress(name="apt", hosts=summary.hosts)],
    )
    console = Console(record=True, width=400)
    console.print(render_progress(progress, status="COMPLETED"))
    shown = console.export_text()
    assert f"{marked}; {PENDING}" in shown  # host text printed as it is, never as markup
