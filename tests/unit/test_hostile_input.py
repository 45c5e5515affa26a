"""Property tests: hostile text in names, commands and inventories never crashes and never
reaches a shell unquoted."""

from __future__ import annotations

import re
import shlex
import string
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from activities.host_steps import render
from activities.inventory import InventoryError, load_inventory
from workflows.models import NAME_PATTERN, SERVICE_PATTERN, RolloutInput, describe_validation_error

SHELLY = st.one_of(
    st.text(
        alphabet=st.sampled_from([*string.printable, "é", "ß", "中", "\u202e", "\x00"]),
        max_size=300,
    ),
    st.sampled_from(["$(reboot)", "`id`", "a\nb", "x" * 5000, "nginx;rm -rf /", "ok-name"]),
)
BASE = {
    "targetClusters": ["cluster-a"],
    "pilotHostCount": 1,
    "approverEmails": ["alice@example.com"],
    "requesterEmail": "bob@example.com",
    "updateCommand": "apt-get -y upgrade",
}


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(["targetClusters", "serviceList"]), value=SHELLY)
def test_names_are_either_refused_clearly_or_boring(field: str, value: str) -> None:
    try:
        rollout = RolloutInput.at_edge({**BASE, field: [value]})
    except ValidationError as error:
        message = describe_validation_error(error)
        assert message.startswith(f"{field}[0]:") or message.startswith(f"{field}:")
        return
    accepted = (rollout.target_clusters if field == "targetClusters" else rollout.service_list)[0]
    assert re.fullmatch(NAME_PATTERN if field == "targetClusters" else SERVICE_PATTERN, accepted)
    assert not set(accepted) & set(" ;&|$`()<>'\"\\\n\t*?![]{}")


@settings(max_examples=200, deadline=None)
@given(
    raw=st.dictionaries(
        st.sampled_from(
            [
                *BASE,
                "maxConcurrency",
                "approvalTimeout",
                "vaultAddress",
                "secretPathPrefix",
                "extra",
            ]
        ),
        st.one_of(st.none(), st.integers(), st.floats(), SHELLY, st.lists(SHELLY, max_size=3)),
    )
)
def test_any_input_gives_a_model_or_a_readable_error(raw: dict) -> None:
    try:
        RolloutInput.at_edge({**BASE, **raw})
    except ValidationError as error:
        message = describe_validation_error(error)
        assert message and all(":" in line for line in message.splitlines())


@settings(max_examples=300, deadline=None)
@given(value=SHELLY.filter(lambda text: "\x00" not in text))
def test_rendered_values_are_one_shell_word(value: str) -> None:
    command = render("systemctl stop {service}", service=value)
    assert shlex.split(command) == ["systemctl", "stop", value]


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=400))
def test_any_inventory_text_loads_or_says_what_is_wrong(text: str, tmp_path_factory) -> None:
    path: Path = tmp_path_factory.mktemp("inv") / "inventory.yml"
    path.write_text(text, encoding="utf-8")
    try:
        clusters = load_inventory(path)
    except InventoryError as error:
        assert str(error)
        return
    for hosts in clusters.values():
        for host in hosts:
            assert re.fullmatch(NAME_PATTERN, host.name)
