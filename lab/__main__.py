"""Bring up a lab for a demo: ``python -m lab --root /tmp/pp-lab --vault --temporal``.

Runs until interrupted, then stops everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from pathlib import Path

from bot.embedded import ManagedProcess, start_temporal_dev_server
from lab.lab import Lab
from lab.processes import OpenBaoProcess, start_openbao


def _parse_cluster(text: str) -> tuple[str, list[str]]:
    name, sep, hosts = text.partition("=")
    if not sep or not hosts:
        raise argparse.ArgumentTypeError(f"expected CLUSTER=HOST,HOST,... not {text!r}")
    return name, hosts.split(",")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="lab state directory")
    parser.add_argument(
        "--cluster",
        type=_parse_cluster,
        action="append",
        help="CLUSTER=HOST,HOST,... (repeatable; default cluster-a=a1,a2 cluster-b=b1,b2)",
    )
    parser.add_argument("--port", type=int, default=2222)
    parser.add_argument("--address-prefix", default="127.0.1.")
    parser.add_argument("--vault", action="store_true", help="start OpenBao and seed the key")
    parser.add_argument("--temporal", action="store_true", help="start a Temporal dev server")
    parser.add_argument("--ui-port", type=int, default=None, help="Temporal Web UI port")
    return parser


def _start_servers(args: argparse.Namespace, lab: Lab, servers: list[ManagedProcess]) -> None:
    """Start what ``args`` asks for beside the lab, appending each to ``servers`` at once so
    that the caller stops it even if a later one fails."""
    if args.vault:
        bao = start_openbao(log_file=args.root / "openbao.log")
        servers.append(bao)
        lab.seed_vault(bao.address, bao.root_token, per_host=True)
        print(f"VAULT_ADDR={bao.address} VAULT_TOKEN={bao.root_token}")
    if args.temporal:
        temporal = start_temporal_dev_server(
            ui_port=args.ui_port,
            db_file=args.root / "temporal.db",
            log_file=args.root / "temporal.log",
        )
        servers.append(temporal)
        print(f"TEMPORAL_ADDRESS={temporal.address}")


def _print_environment(lab: Lab, servers: list[ManagedProcess]) -> None:
    print("\n# for `patchpilot worker` / `patchpilot start` in another shell:")
    print(f"export PATCHPILOT_INVENTORY={lab.inventory_path}")
    print(f"export PATCHPILOT_KNOWN_HOSTS={lab.known_hosts_path}")
    for server in servers:
        if isinstance(server, OpenBaoProcess):
            print(f"export VAULT_ADDR={server.address} VAULT_TOKEN={server.root_token}")
        else:
            print(f"export TEMPORAL_ADDRESS={server.address}")


def main(argv: list[str] | None = None) -> None:
    """Start the lab (and OpenBao / Temporal if asked), print how to reach them, wait for
    Ctrl-C or SIGTERM, stop everything. argparse exits with 2 on bad arguments."""
    args = _parser().parse_args(argv)
    clusters = dict(args.cluster or [("cluster-a", ["a1", "a2"]), ("cluster-b", ["b1", "b2"])])
    servers: list[ManagedProcess] = []
    lab = Lab(args.root, clusters, port=args.port, address_prefix=args.address_prefix)
    try:
        lab.start()
        for h in lab.hosts:
            print(f"host {h.name:10} {h.cluster:12} {h.address}:{h.port}  state {h.root}")
        print(f"inventory    {lab.inventory_path}")
        print(f"known_hosts  {lab.known_hosts_path}")
        print(f"client key   {lab.client_key_path}")
        _start_servers(args, lab, servers)
        _print_environment(lab, servers)
        print("lab is up; Ctrl-C to stop")
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave servers running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for server in reversed(servers):
            server.stop()
        lab.stop()


if __name__ == "__main__":
    main()
