"""What the approval request shows of the selected hosts: every cluster's hosts in inventory order
and the limit, a long list folded behind "Show all N hosts" (a modal with every host), never
silently cut — in Slack and in the approval e-mail."""

from __future__ import annotations

from activities import notify
from bot.slack import blocks
from bot.slack.selection import (
    HOSTS_SHOWN,
    SHOW_HOSTS_ACTION,
    VIEW_BLOCKS,
    Selection,
    hosts_view,
    summary_text,
)
from lab.slack_standin.rules import block_kit_error, view_error
from workflows.models import RolloutNotice


def approval(selection: Selection) -> list[dict]:
    made = blocks.as_dicts(
        blocks.approval_request("r1", "<@UBOB>", ["<@UALICE>"], list(selection.hosts), selection)
    )
    assert block_kit_error({"blocks": made, "text": "Approval needed"}) is None
    return made


def buttons(made: list[dict]) -> list[str]:
    return [element["text"]["text"] for element in made[1]["elements"]]


def test_a_short_selection_lists_every_host_and_the_limit() -> None:
    made = approval(Selection({"cluster-a": ["a1", "a3"], "cluster-b": ["b1"]}, limit="!a2"))
    text = made[0]["text"]["text"]
    assert "*cluster-a* — 2 hosts: a1, a3\n*cluster-b* — 1 host: b1\n" in text
    assert "limit: `!a2` (Ansible host pattern" in text
    assert buttons(made) == ["Approve", "Reject"]


def test_whole_clusters_have_no_limit_line_and_notes_are_shown() -> None:
    note = "a1 and first-alias are one machine (10.0.0.1:22): patched once"
    text, folded = summary_text(Selection({"cluster-a": ["a1", "a2"]}, notes={"cluster-a": note}))
    assert text == f"*cluster-a* — 2 hosts: a1, a2\n_{note}_"
    assert not folded


def test_a_long_cluster_is_folded_behind_show_all_with_the_rest_counted() -> None:
    names = [f"web{n:03d}" for n in range(1, 121)]
    made = approval(Selection({"web": names}, limit="web*"))
    text = made[0]["text"]["text"]
    assert f"*web* — 120 hosts: {', '.join(names[:HOSTS_SHOWN])} … and 100 more" in text
    assert names[HOSTS_SHOWN] not in text
    assert buttons(made) == ["Approve", "Reject", "Show all 120 hosts"]
    assert made[1]["elements"][2]["action_id"] == SHOW_HOSTS_ACTION
    assert made[1]["elements"][2]["value"] == "r1"


def test_many_clusters_fold_the_clusters_that_do_not_fit() -> None:
    hosts = {f"cluster-{n:02d}": [f"c{n:02d}-host{m:02d}" for m in range(15)] for n in range(60)}
    made = approval(Selection(hosts))
    text = made[0]["text"]["text"]
    assert len(text) <= blocks.SECTION_TEXT
    shown = text.count("— 15 hosts")
    assert 0 < shown < 60
    assert f"… and {60 - shown} more clusters ({(60 - shown) * 15} hosts)" in text
    assert buttons(made)[-1] == "Show all 900 hosts"


def test_the_modal_lists_every_host_in_inventory_order() -> None:
    hosts = {"web": [f"web{n:04d}.example.com" for n in range(2000)], "db": ["db1", "db2"]}
    view = hosts_view("r1", Selection(hosts, limit="web*:db*"))
    assert view_error(view) is None
    texts = [block["text"]["text"] for block in view["blocks"]]
    assert texts[0].startswith("Rollout `r1`: 2002 hosts selected\nlimit: `web*:db*`")
    assert all(len(text) <= 3000 for text in texts)
    listed = ", ".join(text for text in texts if not text.startswith(("Rollout", "*")))
    assert listed == ", ".join([*hosts["web"], *hosts["db"]])
    assert "*web* — 2000 hosts" in texts and "*db* — 2 hosts" in texts


def test_a_selection_beyond_one_modal_says_how_many_it_left_out_and_where_they_are() -> None:
    names = [f"{'x' * 70}-{n:06d}" for n in range(10_000)]
    view = hosts_view("r1", Selection({"huge": names}))
    # Within 100 blocks and views.open's 250 KB (`view_too_large`), whichever comes first.
    assert view_error(view) is None and len(view["blocks"]) <= VIEW_BLOCKS
    texts = [block["text"]["text"] for block in view["blocks"]]
    shown = sum(text.count(", ") + 1 for text in texts[2:-1])
    assert texts[-1] == (
        f"… and {10_000 - shown} more hosts that do not fit here: every host is listed by "
        "`patchpilot status r1` and in the approval e-mail"
    )


def test_host_names_are_escaped_and_a_backtick_cannot_end_the_limit_code() -> None:
    text, _ = summary_text(Selection({"c": ["<!channel>", "a&b"]}, limit="a`b"))
    assert "&lt;!channel&gt;, a&amp;b" in text and "<!channel>" not in text
    assert "limit: `a'b`" in text


def test_a_selection_not_resolved_yet_says_so() -> None:
    text, folded = summary_text(Selection({}, limit="!a2", pending=True))
    assert text.startswith("_The hosts are not resolved yet")
    assert "limit: `!a2`" in text and not folded


def test_the_approval_email_lists_every_host_and_the_limit() -> None:
    names = [f"web{n:03d}" for n in range(1, 121)]
    notice = RolloutNotice(
        rollout_id="r1",
        requester_email="bob@example.com",
        approver_emails=["alice@example.com"],
        target_clusters=["web", "db"],
        hosts_by_cluster={"web": names, "db": ["db1"]},
        host_pattern="web*:db1",
        update_command="apt-get -y upgrade",
    )
    body = notify.approval_request(notice).body
    assert "  web (120 hosts): " + ", ".join(names[:50]) in body
    assert "… and 70 more (every host is listed at the end)" in body
    assert "  db (1 hosts): db1\n" in body
    assert "  limit: web*:db1 (Ansible host pattern" in body
    every = body.split("Every selected host:\n", 1)[1]
    assert every == (
        "  web (120 hosts):\n"
        + "".join(f"    {name}\n" for name in names)
        + "  db (1 hosts):\n    db1\n"
    )
    # A short selection needs no list at the end.
    short = notice.model_copy(update={"hosts_by_cluster": {"web": names[:3]}})
    assert "Every selected host" not in notify.approval_request(short).body
