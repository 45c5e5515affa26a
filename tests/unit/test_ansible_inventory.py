"""Inventories as people write them, read by the real `ansible-inventory` (ansible-core).

Each case asserts what a rollout would use: the cluster's hosts, their order (pilots are the first
N), their addresses and ports, and their command overrides.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.ansible_inventory import InventoryError, SourceCache, split_sources
from activities.inventory import InventoryActivities, load_clusters, load_inventory
from workflows.models import ClusterHostsRequest, HostTarget
from workflows.planning import once_per_machine

INI = """\
[web]
web[01:03].example.com ansible_port=2222
10.0.0.[11:12]

[db]
db2 ansible_host=192.0.2.2 patchpilot_drain_check="test ! -e /run/busy"
db1 ansible_ssh_host=192.0.2.1 ansible_ssh_port=2200 ansible_ssh_user=ops

[web:vars]
patchpilot_service_health=curl -fsS localhost/{service}/health

[prod:children]
db
web

[dc1]
web02.example.com
db1

[all:vars]
patchpilot_maintenance_on=touch /etc/maint
"""


def where(hosts: list[HostTarget]) -> list[tuple[str, str, int]]:
    return [(h.name, h.address, h.port) for h in hosts]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_ini_with_ranges_children_and_vars(tmp_path: Path) -> None:
    clusters = load_inventory(write(tmp_path / "hosts.ini", INI))
    assert where(clusters["web"]) == [
        ("web01.example.com", "web01.example.com", 2222),
        ("web02.example.com", "web02.example.com", 2222),
        ("web03.example.com", "web03.example.com", 2222),
        ("10.0.0.11", "10.0.0.11", 22),
        ("10.0.0.12", "10.0.0.12", 22),
    ]
    # The ansible_ssh_* spellings Ansible still accepts.
    assert where(clusters["db"]) == [("db2", "192.0.2.2", 22), ("db1", "192.0.2.1", 2200)]
    assert clusters["db"][1].user == "ops"
    # A parent group is a cluster too: its children's hosts, in the order of its children.
    assert [h.name for h in clusters["prod"]] == [
        "db2",
        "db1",
        "web01.example.com",
        "web02.example.com",
        "web03.example.com",
        "10.0.0.11",
        "10.0.0.12",
    ]
    assert [h.name for h in clusters["dc1"]] == ["web02.example.com", "db1"]
    assert "all" not in clusters and "ungrouped" not in clusters
    web01, db2 = clusters["web"][0], clusters["db"][0]
    assert web01.commands.service_health == "curl -fsS localhost/{service}/health"
    assert web01.commands.maintenance_on == "touch /etc/maint"
    assert web01.commands.drain_check == "true"
    assert db2.commands.drain_check == "test ! -e /run/busy"
    assert db2.commands.service_health == "systemctl is-active {service}"


def test_yaml_with_ranges_keeps_inventory_order(tmp_path: Path) -> None:
    source = write(
        tmp_path / "inventory.yml",
        "all:\n  children:\n    edge:\n      hosts:\n"
        "        z9: {ansible_host: 10.1.0.9}\n"
        "        edge[08:10]: {ansible_port: 2201}\n"
        "        a1: {ansible_host: 10.1.0.1, patchpilot_reboot: 'systemctl kexec'}\n",
    )
    edge = load_inventory(source)["edge"]
    assert where(edge) == [
        ("z9", "10.1.0.9", 22),
        ("edge08", "edge08", 2201),
        ("edge09", "edge09", 2201),
        ("edge10", "edge10", 2201),
        ("a1", "10.1.0.1", 22),
    ]
    assert edge[-1].commands.reboot == "systemctl kexec"


def test_directory_with_group_vars_and_host_vars(tmp_path: Path) -> None:
    root = tmp_path / "inventory"
    write(root / "hosts.ini", "[app]\napp1\napp2\napp3\n")
    write(root / "group_vars" / "all.yml", "patchpilot_drain_check: 'test ! -e /run/all'\n")
    write(
        root / "group_vars" / "app.yml",
        "ansible_user: deploy\npatchpilot_drain_check: 'test ! -e /run/app'\n",
    )
    write(root / "host_vars" / "app2.yml", "ansible_host: 10.2.0.2\nansible_port: 2022\n")
    write(root / "host_vars" / "app3" / "vars.yml", "patchpilot_drain_check: 'true # app3'\n")
    app = load_inventory(root)["app"]
    assert where(app) == [("app1", "app1", 22), ("app2", "10.2.0.2", 2022), ("app3", "app3", 22)]
    assert {h.user for h in app} == {"deploy"}
    # host_vars over group_vars/<group> over group_vars/all, as Ansible ranks them.
    assert [h.commands.drain_check for h in app] == [
        "test ! -e /run/app",
        "test ! -e /run/app",
        "true # app3",
    ]


def test_ipv6_hosts(tmp_path: Path) -> None:
    source = write(
        tmp_path / "v6.ini",
        "[v6]\n2001:db8::5\nnamed ansible_host=2001:db8::7 ansible_port=2222\n",
    )
    assert where(load_inventory(source)["v6"]) == [
        ("2001:db8::5", "2001:db8::5", 22),
        ("named", "2001:db8::7", 2222),
    ]


def test_constructed_plugin_and_comma_separated_sources(tmp_path: Path) -> None:
    hosts = write(
        tmp_path / "hosts.yml",
        "all:\n  hosts:\n"
        "    h1: {role: web, ansible_host: 10.3.0.1}\n"
        "    h2: {role: db, ansible_host: 10.3.0.2}\n"
        "    h3: {role: web, ansible_host: 10.3.0.3}\n",
    )
    constructed = write(
        tmp_path / "constructed.yml",
        "plugin: ansible.builtin.constructed\nstrict: true\n"
        "keyed_groups:\n  - key: role\n    prefix: role\n"
        "groups:\n  not_db: role != 'db'\n",
    )
    clusters = load_inventory(f"{hosts},{constructed}")
    assert where(clusters["role_web"]) == [("h1", "10.3.0.1", 22), ("h3", "10.3.0.3", 22)]
    assert [h.name for h in clusters["role_db"]] == ["h2"]
    assert [h.name for h in clusters["not_db"]] == ["h1", "h3"]


@pytest.mark.parametrize(
    ("pattern", "cluster", "selected"),
    [
        ("web[0:1]", "web", ["web01.example.com", "web02.example.com"]),  # a group's slice
        ("web0[23]*", "web", ["web02.example.com", "web03.example.com"]),  # a glob
        ("~web0[13]\\..*", "web", ["web01.example.com", "web03.example.com"]),  # a regex
        ("prod:&dc1", "prod", ["db1", "web02.example.com"]),  # intersection
        ("!db2", "db", ["db1"]),  # exclusion
        ("db1,10.0.0.12", "prod", ["db1", "10.0.0.12"]),
    ],
)
def test_limit_patterns_select_inside_the_cluster(
    tmp_path: Path, pattern: str, cluster: str, selected: list[str]
) -> None:
    source = write(tmp_path / "hosts.ini", INI)
    assert [h.name for h in load_inventory(source, pattern)[cluster]] == selected
    # Inventory order is kept whatever order the pattern names hosts in.
    everything = [h.name for h in load_inventory(source)[cluster]]
    assert selected == [name for name in everything if name in selected]


async def test_the_activity_applies_the_limit_and_says_why_nothing_matched(
    tmp_path: Path,
) -> None:
    activities = InventoryActivities(write(tmp_path / "hosts.ini", INI))
    request = ClusterHostsRequest(target_cluster="web", host_pattern="web[1:2]")
    hosts = (await activities.get_cluster_hosts(request)).hosts
    assert [h.name for h in hosts] == ["web02.example.com", "web03.example.com"]
    # `web0[1-3]` is not a pattern Ansible knows any more: its own warning reaches the user.
    request = ClusterHostsRequest(target_cluster="web", host_pattern="web0[1-3]")
    with pytest.raises(ApplicationError) as refused:
        await activities.get_cluster_hosts(request)
    assert refused.value.type == "EmptyCluster"
    assert "has no hosts matching limit 'web0[1-3]'" in str(refused.value)
    assert "Use [x:y] inclusive subscripts" in str(refused.value)
    with pytest.raises(ApplicationError) as unknown:
        await activities.get_cluster_hosts(ClusterHostsRequest(target_cluster="nope"))
    assert unknown.value.type == "UnknownCluster" and "known: db, dc1, prod, web" in str(
        unknown.value
    )


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("broken.ini", "[web\nhost1\n", "ini plugin: Failed to parse inventory"),
        ("broken.yml", "all:\n  hosts: [a, b]\n", "yaml plugin: Invalid .hosts. entry"),
        ("bad-plugin.yml", "plugin: no.such.plugin\n", "specifies unknown plugin 'no.such.plugin'"),
        (
            "bad-port.ini",
            "[web]\nweb1 ansible_port=not-a-port\n",
            "host 'web1' in group 'web': ansible_port must be a whole number, not 'not-a-port'",
        ),
        ("bad-name.ini", "[web]\n'x;y'\n", "host 'x;y' in group 'web': name: host name"),
    ],
)
def test_malformed_sources_get_ansibles_error_with_the_source_named(
    tmp_path: Path, name: str, text: str, reason: str
) -> None:
    source = write(tmp_path / name, text)
    with pytest.raises(InventoryError, match=reason) as refused:
        load_clusters(source)
    assert str(source) in str(refused.value)
    if "host" not in reason:
        assert f"Completely failed to parse inventory source {source}" in str(refused.value)


def test_a_vaulted_command_is_refused_not_run_as_text(tmp_path: Path) -> None:
    # What `ansible-vault encrypt_string` writes; ansible-inventory --list keeps it encrypted.
    vaulted = (
        "patchpilot_drain_check: !vault |\n"
        "  $ANSIBLE_VAULT;1.1;AES256\n"
        "  62363837333262633637633334363261616135373839613861663832396138303238323963343632\n"
        "  3538663065313963623762316339613932323962333263620a653933666236363263313333666664\n"
        "  35636133656563633535656631633036356536643064316230313436313466356134393036636238\n"
        "  3134326564663263370a316238383731396364373332326661616462343230613033353064383031\n"
        "  36383139383864356264363762653761373163376561313935353731373439336637\n"
    )
    root = tmp_path / "inventory"
    write(root / "hosts.ini", "[web]\nw1\n")
    write(root / "group_vars" / "web.yml", vaulted)
    refusal = "w1' in group 'web': patchpilot_drain_check is vault-encrypted"
    with pytest.raises(InventoryError, match=refusal):
        load_inventory(root)


def test_missing_sources_are_named(tmp_path: Path) -> None:
    present = write(tmp_path / "hosts.ini", INI)
    with pytest.raises(InventoryError, match=f"cannot read inventory {tmp_path}/gone.yml: no such"):
        load_inventory(f"{present},{tmp_path}/gone.yml")
    with pytest.raises(InventoryError, match="PATCHPILOT_INVENTORY is empty"):
        split_sources(" , ")


def test_cached_per_source_and_read_again_when_it_changes(tmp_path: Path) -> None:
    root = tmp_path / "inv"
    hosts = write(root / "hosts.ini", "[c]\nh1\nh2\n")
    cache = SourceCache()
    activities = InventoryActivities(hosts, cache)
    for _ in range(3):
        assert [h.name for h in activities.clusters()["c"][0]] == ["h1", "h2"]
    assert activities.loads == 1
    write(root / "group_vars" / "c.yml", "ansible_port: 2200\n")
    assert {h.port for h in activities.clusters()["c"][0]} == {2200}
    assert activities.loads == 2
    time.sleep(0.01)
    hosts.write_text("[c]\nh2\nh1\nh3\n")
    os.utime(hosts)
    assert [h.name for h in activities.clusters()["c"][0]] == ["h2", "h1", "h3"]
    assert activities.loads == 3


def test_one_machine_under_two_names_is_patched_once() -> None:
    def host(name: str, address: str, port: int = 22) -> HostTarget:
        return HostTarget(name=name, cluster="c", address=address, port=port)

    seen: dict[tuple[str, int], str] = {}
    kept, notes = once_per_machine(
        [host("a1", "10.0.0.1"), host("a1-alias", "10.0.0.1"), host("a2", "10.0.0.1", 2222)],
        seen,
    )
    assert [h.name for h in kept] == ["a1", "a2"]
    assert notes == ["a1-alias is a1 (10.0.0.1:22): patched once"]
    kept, notes = once_per_machine([host("a1", "10.0.0.1"), host("b1", "10.0.0.9")], seen)
    assert [h.name for h in kept] == ["b1"]
    assert notes == ["a1 is also in an earlier cluster: patched once"]
