"""Slack as a real workspace behaves (issue 14), end to end on the real Temporal dev server,
OpenBao and sshd lab hosts: the stand-in escapes command text, checks `thread_ts`, validates Block
Kit, answers 429 beyond about one post a second per channel and keeps every version of every
message; the tests assert what a person in the channel would read."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client

from bot.rollouts import new_rollout_id
from bot.settings import Settings
from bot.slack import blocks
from bot.slack.blocks import APPROVE_ACTION
from lab import Lab
from lab.mass import MassLab
from lab.processes import OpenBaoProcess
from lab.slack_standin import SlackStandIn
from tests.slack.helpers import (
    ALICE,
    BOB,
    CHANNEL,
    EMAILS,
    UPDATE,
    BotServer,
    bot_and_worker,
    commands,
    request_rollout,
)
from tests.support import SECRET_PREFIX, wait_for
from workflows.models import ApprovalDecision, Phase, RolloutInput, RolloutSummary

README_EXAMPLE = (
    f'cluster-a cluster-b pilot=1 services=nginx,postgresql update="{UPDATE}" '
    f"approvers=<@{ALICE}|alice>"
)


async def test_the_readme_example_reaches_every_host_exactly_as_typed(
    bot: BotServer, fleet: Lab, temporal_client: Client
) -> None:
    slack = bot.slack
    assert "&amp;&amp;" in slack_text_sent(slack, bot, README_EXAMPLE)  # as Slack sends it
    rollout_id, card_ts, approval = await request_rollout(bot, README_EXAMPLE)

    # A refused click is answered in the thread where it was made (container.thread_ts).
    await bot.click(APPROVE_ACTION, rollout_id, BOB, approval["ts"])
    await wait_for(lambda: slack.ephemerals(BOB), timeout=60)
    refused = slack.ephemerals(BOB)[0]
    assert "requested this rollout and cannot approve" in refused["text"]
    assert refused["thread_ts"] == card_ts

    await bot.click(APPROVE_ACTION, rollout_id, ALICE, approval["ts"])
    summary = await temporal_client.get_workflow_handle(
        rollout_id, result_type=RolloutSummary
    ).result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 6
    for host in fleet.hosts:
        assert UPDATE in commands(fleet, host.name), host.name
        assert not any("&amp;" in command for command in commands(fleet, host.name))

    # Every version of the card a person saw tells the whole rollout, the command as typed.
    await wait_for(lambda: "succeeded" in slack.messages[(CHANNEL, card_ts)]["text"], timeout=60)
    versions = slack.card_versions(CHANNEL, card_ts)
    assert len(versions) >= 3
    for shown in versions:
        assert "Patch rollout: cluster-a, cluster-b" in shown
        assert "*Pilot hosts per cluster*\n1" in shown
        assert "*Services*\nnginx, postgresql" in shown
        assert f"*Update command*\n`{UPDATE}`" in shown
    assert slack.throttled == []


def slack_text_sent(slack: SlackStandIn, bot: BotServer, typed: str) -> str:
    """The `text` field Slack sends for `typed` (the stand-in's own escaping)."""
    from lab.slack_standin import slash_command_fields

    return slash_command_fields(typed, BOB, CHANNEL, slack.response_url())["text"]


# ---- rate: a 30-host rollout at concurrency 10 -------------------------------------------------

MASS_HOSTS = 30


@pytest.fixture
def mass_lab(tmp_path: Path, openbao: OpenBaoProcess) -> Iterator[MassLab]:
    lab = MassLab(tmp_path / "mass", MASS_HOSTS, listeners=2, address_base="127.54.")
    lab.start()
    try:
        lab.write_inventory()
        lab.seed_vault(openbao.address, openbao.root_token, prefix=SECRET_PREFIX, per_host=True)
        yield lab
    finally:
        lab.stop()


@pytest_asyncio.fixture
async def mass_bot(
    worker_settings: Settings, mass_lab: MassLab, temporal_client: Client, slack: SlackStandIn
) -> AsyncIterator[BotServer]:
    settings = worker_settings.model_copy(
        update={"inventory": mass_lab.inventory_path, "known_hosts": mass_lab.known_hosts_path}
    )
    async with bot_and_worker(settings, temporal_client, slack) as running:
        yield running


def per_second_peak(times: list[float]) -> int:
    """The most posts within any one second."""
    return max((sum(1 for t in times if start <= t < start + 1.0) for start in times), default=0)


async def test_a_30_host_rollout_at_concurrency_10_stays_within_slacks_rate_rule(
    mass_bot: BotServer, mass_lab: MassLab
) -> None:
    slack, client = mass_bot.slack, mass_bot.bot.client
    cluster = next(iter(mass_lab.clusters))
    rollout = RolloutInput.model_validate(
        {
            "targetClusters": [cluster],
            "pilotHostCount": 1,
            "approverEmails": [EMAILS[ALICE]],
            "requesterEmail": EMAILS[BOB],
            "updateCommand": UPDATE,
            "serviceList": ["nginx", "postgresql"],
            "maxConcurrency": 10,
            "slackChannel": CHANNEL,
        }
    )
    rollout_id = new_rollout_id([cluster])
    info = blocks.CardInfo.from_input(rollout_id, rollout)
    posted = await client.chat_postMessage(
        channel=CHANNEL,
        text=blocks.card_text(info),
        blocks=blocks.as_dicts(blocks.status_card(info)),
    )
    card_ts = str(posted["ts"])
    rollout = rollout.model_copy(update={"slack_thread_ts": card_ts})
    rollouts = mass_bot.bot.rollouts
    await rollouts.start(rollout, rollout_id)
    await wait_for(lambda: slack.messages[(CHANNEL, card_ts)]["updates"] >= 1, timeout=60)
    await rollouts.decide(rollout_id, ApprovalDecision(approver=EMAILS[ALICE]), approve=True)
    summary = await rollouts.result(rollout_id)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == MASS_HOSTS

    def texts() -> list[str]:
        return [message["text"] for message in slack.thread(CHANNEL, card_ts)]

    await wait_for(lambda: any("Rollout succeeded" in text for text in texts()), timeout=60)
    await wait_for(lambda: "succeeded" in slack.messages[(CHANNEL, card_ts)]["text"], timeout=60)
    posts = slack.posts(CHANNEL)
    updates = [c for c in slack.calls_to("chat.update") if c.params.get("ts") == card_ts]
    print(
        f"\n30 hosts at concurrency 10: {len(posts)} messages, {len(updates)} card updates, "
        f"peak {per_second_peak([c.at for c in posts])} posts/s, {len(slack.throttled)} 429s"
    )
    print("\n".join(texts()))
    assert slack.throttled == [], "Slack answered 429"
    assert any(re.match(r":white_check_mark: \d+ patched \(fleet\): ", t) for t in texts())
    # Every host is told, batched or alone, and the card's last version is the final state.
    told = "\n".join(texts())
    assert all(host.name in told for host in mass_lab.hosts)
    assert "30/30 done" in slack.card_versions(CHANNEL, card_ts)[-1]
    assert len(posts) < MASS_HOSTS and len(updates) < MASS_HOSTS
    gaps = [b.at - a.at for a, b in itertools.pairwise(updates)]
    assert all(gap >= 3.0 for gap in gaps[:-1]), gaps  # the final one may come at once
