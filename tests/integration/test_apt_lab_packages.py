"""The per-host package report where people read it (issue 15, item 6), from a real upgrade on the
real-apt lab (lab/apt_lab.py): the rollout's Slack thread (the Slack stand-in, which refuses what
Slack's documented limits refuse) shows each host's report collapsed to one line, its "Packages"
button opens the whole report in a modal, and the summary e-mail (a real SMTP server) has a
"Packages" section per host.

The lab is test_apt_lab.py's (one lab per module, hosts reset per test)."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client

from bot.settings import Settings
from bot.slack.client import web_client
from bot.slack.package_blocks import PACKAGES_ACTION
from lab.apt_lab import AptLab
from lab.processes import OpenBaoProcess
from lab.slack_standin import SlackStandIn
from lab.slack_standin.rules import block_texts
from tests.integration import test_apt_lab
from tests.integration.test_apt_lab import HOSTS, UPGRADED, approve, packages
from tests.integration.test_rollout import ALICE as ALICE_EMAIL
from tests.integration.test_rollout import rollout, start
from tests.slack.helpers import ALICE, CHANNEL, bot_and_worker, standin
from tests.support import Mailbox, wait_for
from workflows.models import Phase
from workflows.targets import UPDATE_PROFILES

apt_lab = test_apt_lab.apt_lab  # the module's lab: pytest finds fixtures by name

LINE = "4 upgraded, 1 kept back, 1 held; reboot required (pp-reboot)"
CONFFILE = "/etc/pp-conf/pp-conf.conf.dpkg-dist"
SHORT = {p: LINE + ("; 1 conffile left (.dpkg-dist/.dpkg-old)" if p == "p1" else "") for p in HOSTS}


def read(message: dict[str, Any]) -> str:
    """What a person reads of a thread message (buttons aside): its sections when it has blocks,
    else its text."""
    sections = [b["text"] for b in message.get("blocks") or [] if b.get("text")]
    return "\n".join(block_texts(sections)) or str(message["text"])


def button_of(message: dict[str, Any]) -> str:
    """The value of the message's Packages button (AssertionError when it has none)."""
    for block in message.get("blocks") or []:
        for element in [block.get("accessory"), *(block.get("elements") or [])]:
            if isinstance(element, dict) and element.get("action_id") == PACKAGES_ACTION:
                return str(element["value"])
    raise AssertionError(f"no Packages button in {message}")


def lab_settings(
    lab: AptLab, openbao: OpenBaoProcess, temporal_dev_server, smtp_server: tuple[Mailbox, int]
) -> Settings:
    """The worker's settings for the apt lab, with e-mail to the test's SMTP server."""
    for host in HOSTS:
        lab.reset_packages(host)
        lab.reset_host(host)
    lab.reboot_delay = 1.0
    return Settings(
        temporal_address=temporal_dev_server.address,
        task_queue=f"apt-{uuid.uuid4().hex[:8]}",
        inventory=lab.write_inventory(),
        known_hosts=lab.write_known_hosts(),
        vault_addr=openbao.address,
        vault_token=openbao.root_token,
        smtp_host="127.0.0.1",
        smtp_port=smtp_server[1],
        smtp_from="patchpilot@example.com",
    )


async def top_message(slack: SlackStandIn) -> str:
    """The ts of a rollout's top message, as `/patch` posts it before it starts the rollout."""
    top = await web_client(slack.bot_token, slack.api_url).chat_postMessage(
        channel=CHANNEL, text="Patch rollout: apt"
    )
    return str(top["ts"])


def first(slack: SlackStandIn, thread: str, start: str) -> dict[str, Any] | None:
    """The thread's first message whose text starts with `start`."""
    return next((m for m in slack.thread(CHANNEL, thread) if m["text"].startswith(start)), None)


async def test_the_thread_shows_each_hosts_packages_collapsed_and_the_email_in_full(
    apt_lab: AptLab,
    temporal_client: Client,
    openbao: OpenBaoProcess,
    temporal_dev_server,
    smtp_server: tuple[Mailbox, int],
    mailbox: Mailbox,
) -> None:
    settings = lab_settings(apt_lab, openbao, temporal_dev_server, smtp_server)
    # p1's administrator changed pp-conf's conffile; 1.1 ships a new one: dpkg leaves it beside.
    changed = await apt_lab.run("p1", "echo mode=mine >> /etc/pp-conf/pp-conf.conf")
    assert changed.exit_status == 0, changed.stderr
    async with standin() as slack, bot_and_worker(settings, temporal_client, slack) as bot:
        thread = await top_message(slack)
        handle = await start(
            temporal_client,
            settings,
            rollout(
                ["apt"],
                pilotHostCount=1,
                updateCommand=UPDATE_PROFILES["full"],
                updateTimeout=60,
                slackChannel=CHANNEL,
                slackThreadTs=thread,
            ),
        )
        await approve(handle)
        summary = await handle.result()
        assert summary.phase == Phase.SUCCEEDED and summary.patched == 2
        for host in HOSTS:
            assert await packages(apt_lab, host) == UPGRADED

        def posted(start: str) -> dict[str, Any] | None:
            return first(slack, thread, start)

        await wait_for(lambda: posted(":white_check_mark: *Rollout succeeded*"), timeout=60)
        # Each host's success: its short line, and the Packages button for that host.
        for host in HOSTS:
            success = posted(f":white_check_mark: *{host}* (apt) patched")
            assert success is not None
            assert read(success) == (
                f":white_check_mark: *{host}* (apt) patched: services healthy, out of "
                f"maintenance mode\n:package: {SHORT[host]}"
            )
        p1 = posted(":white_check_mark: *p1* (apt) patched")
        assert p1 is not None
        assert (await bot.click(PACKAGES_ACTION, button_of(p1), ALICE, p1["ts"]))[0] == 200
        await wait_for(lambda: len(slack.views) == 1, timeout=30)
        modal = "\n".join(block_texts(slack.views[0]["blocks"]))
        for line in (
            "*p1* · done",
            f"{SHORT['p1']}\n*Upgraded (4)*\n• pp-conf 1.0 → 1.1\n• pp-debconf 1.0 → 1.1\n"
            "• pp-hello 1.0 → 1.1\n• pp-reboot 1.0 → 1.1",
            "*Kept back (1)*\n• pp-held: held (dpkg selection hold)",
            "*Held (1)*\n• pp-held",
            "*Reboot required (1)*\n• because of pp-reboot",
            f"*Conffiles left beside the host's own (1)*\n• {CONFFILE}",
        ):
            assert line in modal, (line, modal)
        assert "*p2*" not in modal  # the button of p1's success shows p1

        # The summary: each host collapsed under its outcome; its button shows every host.
        end = posted(":white_check_mark: *Rollout succeeded*")
        assert end is not None
        shown = read(end)
        for host in HOSTS:
            assert f"apt/{host}: done (rebooted)\n    packages: {SHORT[host]}" in shown
        await bot.click(PACKAGES_ACTION, button_of(end), ALICE, end["ts"])
        await wait_for(lambda: len(slack.views) == 2, timeout=30)
        both = "\n".join(block_texts(slack.views[1]["blocks"]))
        assert "the package report of 2 hosts" in both
        assert "*p1* · done" in both and "*p2* · done" in both
        assert both.count("• pp-hello 1.0 → 1.1") == 2 and both.count(CONFFILE) == 1

    # The summary e-mail: a "Packages" section with every host's whole report.
    await wait_for(lambda: mailbox.events("summary"), timeout=60)
    [mail] = mailbox.events("summary")
    assert ALICE_EMAIL in mail["X-Envelope-To"]
    body = mail.get_content().replace("\r\n", "\n")  # SMTP sends lines as CRLF
    section = body[body.index("\nPackages (") :]
    assert section.startswith(
        f"\nPackages (what the update did on each host; `patchpilot report {summary.rollout_id}` "
        "has all, also as JSON or CSV):\n"
    )
    for host in HOSTS:
        assert (
            f"  apt/{host}: {SHORT[host]}\n"
            "    Upgraded (4):\n"
            "      pp-conf 1.0 → 1.1\n"
            "      pp-debconf 1.0 → 1.1\n"
            "      pp-hello 1.0 → 1.1\n"
            "      pp-reboot 1.0 → 1.1\n"
            "    Kept back (1):\n"
            "      pp-held: held (dpkg selection hold)\n"
            "    Held (1):\n"
            "      pp-held\n"
            "    Reboot required (1):\n"
            "      because of pp-reboot\n"
        ) in section, section
    assert f"    Conffiles left beside the host's own (1):\n      {CONFFILE}\n" in section


async def test_a_dry_runs_thread_and_email_show_what_apt_would_change_the_same_way(
    apt_lab: AptLab,
    temporal_client: Client,
    openbao: OpenBaoProcess,
    temporal_dev_server,
    smtp_server: tuple[Mailbox, int],
    mailbox: Mailbox,
) -> None:
    settings = lab_settings(apt_lab, openbao, temporal_dev_server, smtp_server)
    async with standin() as slack, bot_and_worker(settings, temporal_client, slack) as bot:
        thread = await top_message(slack)
        dry = rollout(["apt"], dryRun=True, slackChannel=CHANNEL, slackThreadTs=thread)
        summary = await (await start(temporal_client, settings, dry)).result()
        assert summary.phase == Phase.DRY_RUN_DONE
        await wait_for(lambda: any(m.get("blocks") for m in slack.thread(CHANNEL, thread)), 60)
        [end] = [m for m in slack.thread(CHANNEL, thread) if m.get("blocks")]
        shown = read(end)
        for host in HOSTS:  # pp-held stays: it is on hold
            assert f"apt/{host}: ok; 5 pending updates; no reboot; would upgrade 4" in shown
        await bot.click(PACKAGES_ACTION, button_of(end), ALICE, end["ts"])
        await wait_for(lambda: len(slack.views) == 1, timeout=30)
        modal = "\n".join(block_texts(slack.views[0]["blocks"]))
        assert "what the update would change (apt-get -s) of 2 hosts" in modal
        assert modal.count("• upgrade pp-hello 1.0 → 1.1") == 2 and "pp-held" not in modal
    await wait_for(lambda: mailbox.events("summary"), timeout=60)
    body = mailbox.events("summary")[0].get_content().replace("\r\n", "\n")
    section = body[body.index("\nPackages the update would change") :]
    for host in HOSTS:
        assert f"  apt/{host}: would upgrade 4\n" in section
    assert section.count("      upgrade pp-hello 1.0 → 1.1\n") == 2
    for host in HOSTS:  # and nothing changed
        assert await packages(apt_lab, host) == [line.replace("1.1", "1.0") for line in UPGRADED]
