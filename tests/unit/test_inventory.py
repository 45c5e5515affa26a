from pathlib import Path

import pytest

from activities.host_steps import render
from activities.inventory import InventoryError, load_inventory

INVENTORY = """
all:
  vars:
    patchpilot_drain_check: "test ! -e /run/busy"
  children:
    cluster-a:
      hosts:
        a2: {ansible_host: 10.0.0.2, ansible_port: 2222, ansible_user: ops}
        a1:
          ansible_host: 10.0.0.1
      vars:
        patchpilot_service_health: "curl -fsS localhost/{service}/health"
    cluster-b:
      hosts:
        b1:
          patchpilot_maintenance_on: "touch /etc/maint"
    production:
      children:
        cluster-a:
        cluster-b:
"""


def test_groups_are_clusters_and_file_order_is_rollout_order(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yml"
    path.write_text(INVENTORY)
    clusters = load_inventory(path)
    assert [host.name for host in clusters["cluster-a"]] == ["a2", "a1"]
    a2 = clusters["cluster-a"][0]
    assert (a2.address, a2.port, a2.user) == ("10.0.0.2", 2222, "ops")
    b1 = clusters["cluster-b"][0]
    assert b1.address == "b1" and b1.port == 22 and b1.user is None


def test_patchpilot_vars_override_commands_with_host_over_group_over_all(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yml"
    path.write_text(INVENTORY)
    clusters = load_inventory(path)
    a1 = clusters["cluster-a"][1]
    b1 = clusters["cluster-b"][0]
    assert a1.commands.drain_check == "test ! -e /run/busy"
    assert a1.commands.service_health == "curl -fsS localhost/{service}/health"
    assert b1.commands.service_health == "systemctl is-active {service}"
    assert b1.commands.maintenance_on == "touch /etc/maint"


def test_render_quotes_values_but_keeps_the_template() -> None:
    assert render("systemctl stop {service}", service="nginx") == "systemctl stop nginx"
    assert render("echo {rollout_id} > f", rollout_id="a b;c") == "echo 'a b;c' > f"
    assert render("awk '{print $1}'", service="x") == "awk '{print $1}'"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("all: [unclosed", "not valid YAML"),
        ("all:\n  hosts:\n    'bad host;': {}\n  children: {c: {hosts: {'x y': {}}}}", "host"),
        # Ansible's own words: PatchPilot no longer parses inventories itself.
        ("all:\n  children:\n    c:\n      hosts: [a, b]", "yaml plugin: Invalid .hosts. entry"),
    ],
)
def test_broken_inventories_say_what_is_wrong(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "inventory.yml"
    path.write_text(text)
    with pytest.raises(InventoryError, match=reason):
        load_inventory(path)


def test_missing_inventory_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read inventory"):
        load_inventory(tmp_path / "nope.yml")


def test_cluster_windows_come_from_group_vars(tmp_path: Path) -> None:
    from datetime import timedelta

    from activities.inventory import load_clusters

    path = tmp_path / "inventory.yml"
    path.write_text(
        "all:\n  children:\n    c1:\n      hosts: {h1: {}}\n      vars:\n"
        "        patchpilot_windows:\n"
        "          - {cron: '0 2 * * sat', duration: PT4H, timezone: Europe/Paris}\n"
        "    c2:\n      hosts: {h2: {}}\n"
    )
    clusters = load_clusters(path)
    [window] = clusters["c1"][1]
    assert (window.cron, window.duration, window.timezone) == (
        "0 2 * * sat",
        timedelta(hours=4),
        "Europe/Paris",
    )
    assert clusters["c2"][1] == []
    path.write_text(
        "all:\n  children:\n    c1:\n      hosts: {h1: {}}\n      vars:\n"
        "        patchpilot_windows: [{cron: 'every day', duration: PT4H}]\n"
    )
    with pytest.raises(InventoryError, match=r"group 'c1': patchpilot_windows\[0\]: invalid cron"):
        load_clusters(path)
