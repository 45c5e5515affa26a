"""The card's "Skip a host…" menu and modal, and its Abort button with a host in flight (issue 14):
end to end through the Slack stand-in, the bot in HTTP mode, the real Temporal dev server and the
sshd lab; what the hosts received is read from the lab's command logs."""

from __future__ import annotations

import time
from typing import Any

from activities.notify import summary_text
from bot.slack import blocks
from bot.slack.skip import SKIP_ACTION, SKIP_CALLBACK, SKIP_OPEN_ACTION, rollout_of_block
from lab import Lab
from lab.slack_standin import view_submission_body
from lab.slack_standin.rules import block_kit_error, rendered
from tests.slack.helpers import (
    ALICE,
    BOB,
    CHANNEL,
    EVE,
    UPDATE,
    BotServer,
    commands,
    request_rollout,
)
from tests.slack.test_controls import ABORT, clicked, patching
from tests.support import wait_for
from workflows.models import (
    ClusterProgress,
    HostProgress,
    HostState,
    Phase,
    RolloutProgress,
)

SLOW_UPDATE = f"sleep 4 && {UPDATE}"  # long enough for a click while the host is in it


async def chose(
    bot: BotServer, host: str, rollout_id: str, user: str, card_ts: str
) -> dict[str, Any]:
    """Pick `host` in the card's "Skip a host…" menu as `user`; the ephemeral answer."""
    before = len(bot.slack.ephemerals(user))
    status, _ = await bot.choose(SKIP_ACTION, host, user, card_ts)
    assert status == 200
    await wait_for(lambda: len(bot.slack.ephemerals(user)) > before, timeout=60)
    return bot.slack.ephemerals(user)[-1]


def offered(bot: BotServer, card_ts: str) -> list[str]:
    """The hosts the card's menu offers now."""
    return [option["value"] for option in bot.offered(SKIP_ACTION, card_ts)[1]]


async def summary_in_thread(bot: BotServer, card_ts: str) -> str:
    """The thread's summary message as a person reads it."""

    def found() -> str | None:
        for message in bot.slack.thread(CHANNEL, card_ts):
            if "*Rollout " in message["text"]:
                return rendered(str(message["text"]))
        return None

    await wait_for(lambda: found() is not None, timeout=60)
    return str(found())


async def test_a_host_skipped_from_the_cards_menu_is_never_touched(
    bot: BotServer, fleet: Lab
) -> None:
    slack, rollouts = bot.slack, bot.bot.rollouts
    rollout_id, card_ts, approval = await request_rollout(
        bot, f'cluster-b pilot=1 update="{UPDATE}" approvers=<@{ALICE}>'
    )
    assert offered(bot, card_ts) == ["b1", "b2", "b3"]  # every host is pending before approval

    refused = await chose(bot, "b2", rollout_id, EVE, card_ts)
    assert "skip refused: eve@example.com may not control this rollout" in refused["text"]
    assert refused["thread_ts"] == card_ts
    done = await chose(bot, "b2", rollout_id, BOB, card_ts)
    assert "skipped host b2 by bob@example.com" in done["text"] and done["thread_ts"] == card_ts
    # The card is re-rendered at once: b2 is no longer offered, and it counts as skipped.
    await wait_for(lambda: offered(bot, card_ts) == ["b1", "b3"], timeout=60)
    assert "1 skipped" in slack.card_versions(CHANNEL, card_ts)[-1]

    await bot.click("patchpilot_approve", rollout_id, ALICE, approval["ts"])
    summary = await rollouts.result(rollout_id)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 2 and summary.skipped == 1
    assert commands(fleet, "b2") == [], "b2 was touched"
    assert all(commands(fleet, host) for host in ("b1", "b3"))
    text = summary_text(summary)
    assert "cluster-b/b2: skipped (skipped by bob@example.com)" in text
    assert "skipped host b2 by bob@example.com" in text.split("\n\n")[0]  # in the controls
    in_slack = await summary_in_thread(bot, card_ts)
    assert "skipped host b2 by bob@example.com" in in_slack and "b2: skipped" in in_slack
    # Once ended the card offers no controls at all.
    await wait_for(lambda: "succeeded" in slack.messages[(CHANNEL, card_ts)]["text"], timeout=60)
    assert offered(bot, card_ts) == [] and "patchpilot_pause" not in str(
        slack.messages[(CHANNEL, card_ts)]["blocks"]
    )


async def test_the_skip_modal_takes_a_host_and_why(bot: BotServer, fleet: Lab) -> None:
    slack, rollouts = bot.slack, bot.bot.rollouts
    rollout_id, card_ts, approval = await request_rollout(
        bot, f'cluster-a pilot=1 update="{UPDATE}" approvers=<@{ALICE}>'
    )
    # The button a card shows instead of the menu when the pending hosts do not fit in one.
    await bot.click(SKIP_OPEN_ACTION, rollout_id, BOB, card_ts)
    await wait_for(lambda: slack.views, timeout=60)
    view = slack.views[-1]
    assert view["callback_id"] == SKIP_CALLBACK and view["title"]["text"] == "Skip a host"

    async def submit(host: str, reason: str) -> dict[str, Any]:
        before = len(slack.ephemerals(BOB))
        values = {
            "host": {"host": {"type": "plain_text_input", "value": host}},
            "reason": {"reason": {"type": "plain_text_input", "value": reason}},
        }
        status, body = await bot.post(view_submission_body(BOB, view, values))
        assert status == 200 and body == ""  # the modal closes
        await wait_for(lambda: len(slack.ephemerals(BOB)) > before, timeout=60)
        return slack.ephemerals(BOB)[-1]

    unknown = await submit("a9", "")
    assert "a9 is not a host of this rollout" in unknown["text"]
    assert unknown["thread_ts"] == card_ts
    # Typed into a modal, `&` and `<` arrive as typed and are shown once escaped.
    skipped = await submit("a3", "fan <noisy> & hot")
    assert 'skipped host a3 by bob@example.com: "fan &lt;noisy&gt; &amp; hot"' in skipped["text"]

    await bot.click("patchpilot_approve", rollout_id, ALICE, approval["ts"])
    summary = await rollouts.result(rollout_id)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 2 and summary.skipped == 1
    assert commands(fleet, "a3") == []
    a3 = next(host for host in summary.hosts if host.name == "a3")
    assert a3.note == 'skipped by bob@example.com: "fan <noisy> & hot"'


async def test_abort_from_the_card_lets_the_host_in_flight_finish(
    bot: BotServer, fleet: Lab
) -> None:
    rollouts = bot.bot.rollouts
    rollout_id, card_ts, approval = await request_rollout(
        bot, f'cluster-a pilot=1 update="{SLOW_UPDATE}" approvers=<@{ALICE}>'
    )
    await bot.click("patchpilot_approve", rollout_id, ALICE, approval["ts"])
    await patching(rollouts, rollout_id)
    # The pilot a1 is in its update (sleeping) when Abort is clicked.
    await wait_for(lambda: SLOW_UPDATE in commands(fleet, "a1"), timeout=90)
    aborted_at = time.time()
    answer = await clicked(bot, ABORT, rollout_id, BOB, card_ts)
    assert f"`{rollout_id}`: aborted by bob@example.com" in answer["text"]
    assert answer["thread_ts"] == card_ts

    summary = await rollouts.result(rollout_id)
    assert summary.phase == Phase.CANCELLED
    assert summary.message.startswith("aborted by bob@example.com")
    states = {host.name: host.state.value for host in summary.hosts}
    assert states == {"a1": "done", "a2": "skipped", "a3": "skipped"}
    # a1 went on with its steps after the abort, to the end: out of maintenance, services up.
    after = [command for at, command in fleet.command_log_timed("a1") if at > aborted_at]
    assert after, "a1 received nothing after the abort"
    assert not fleet.in_maintenance("a1")
    assert commands(fleet, "a2") == [] and commands(fleet, "a3") == []

    text = summary_text(summary)
    assert "aborted by bob@example.com" in text.split("\n\n")[0]  # in the controls
    for line in (
        "cluster-a/a1: done",
        "cluster-a/a2: skipped (not started: aborted by bob@example.com)",
        "cluster-a/a3: skipped (not started: aborted by bob@example.com)",
    ):
        assert line in text
    in_slack = await summary_in_thread(bot, card_ts)
    assert "aborted by bob@example.com" in in_slack
    assert all(f"{host}: " in in_slack for host in ("a1", "a2", "a3"))


# ---- the skip control within Block Kit's limits (no servers) -----------------------------------


def progress_with(pending: int, *, clusters: int = 1, name_length: int = 0) -> RolloutProgress:
    """A patching rollout whose first host runs and whose `pending` next hosts wait, spread over
    `clusters` clusters; host names padded to `name_length` characters."""
    hosts = [
        HostProgress(
            name=f"h{n}".ljust(name_length, "x"),
            cluster=f"cluster-{n % clusters}",
            state=HostState.RUNNING if n == 0 else HostState.PENDING,
        )
        for n in range(pending + 1)
    ]
    return RolloutProgress(
        rollout_id="patch-" + "r" * 194,  # the longest id a rollout may have (200)
        phase=Phase.PATCHING,
        requester_email="bob@example.com",
        approver_emails=["alice@example.com"],
        clusters=[
            ClusterProgress(
                name=f"cluster-{c}", hosts=[h for h in hosts if h.cluster.endswith(f"-{c}")]
            )
            for c in range(clusters)
        ],
    )


def control_row(progress: RolloutProgress) -> dict[str, Any]:
    info = blocks.CardInfo.from_progress(progress.rollout_id, progress)
    card = blocks.as_dicts(blocks.status_card(info))  # slack_sdk checks Block Kit's limits
    assert block_kit_error({"blocks": card}) is None  # and so does the stand-in, from the docs
    row = next(block for block in card if block["type"] == "actions")
    assert rollout_of_block(row["block_id"]) == progress.rollout_id
    return row


def test_the_menu_offers_only_pending_hosts_with_their_cluster_when_several() -> None:
    progress = progress_with(3, clusters=2)
    menu = control_row(progress)["elements"][-1]
    assert menu["action_id"] == SKIP_ACTION and menu["type"] == "static_select"
    assert [(o["text"]["text"], o["value"]) for o in menu["options"]] == [
        ("h2 (cluster-0)", "h2"),  # cluster by cluster, in inventory order; h0 is running
        ("h1 (cluster-1)", "h1"),
        ("h3 (cluster-1)", "h3"),
    ]
    assert "never touch" in menu["confirm"]["text"]["text"]


def test_more_pending_hosts_than_a_menu_holds_get_the_modal_button() -> None:
    assert control_row(progress_with(100))["elements"][-1]["type"] == "static_select"
    for progress in (progress_with(101), progress_with(3, name_length=151)):
        button = control_row(progress)["elements"][-1]
        assert button["action_id"] == SKIP_OPEN_ACTION and button["value"] == progress.rollout_id
    long_names = control_row(progress_with(3, name_length=150))["elements"][-1]["options"]
    assert all(len(o["text"]["text"]) == 75 for o in long_names)  # cut to Block Kit's 75


def test_no_skip_control_without_a_pending_host() -> None:
    actions = [e["action_id"] for e in control_row(progress_with(0))["elements"]]
    assert actions == ["patchpilot_pause", "patchpilot_abort"]


def test_the_stand_in_refuses_a_menu_beyond_block_kits_limits() -> None:
    options = [
        {"text": {"type": "plain_text", "text": f"h{n}"}, "value": f"h{n}"} for n in range(101)
    ]

    def row(shown: list[dict[str, Any]]) -> dict[str, Any]:
        menu = {"type": "static_select", "action_id": "x", "options": shown}
        return {"type": "actions", "elements": [menu]}

    assert block_kit_error({"blocks": [row(options)]}) == "invalid_blocks"
    assert block_kit_error({"blocks": [row(options[:100])]}) is None
