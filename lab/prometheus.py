"""A real Prometheus for the lab (Debian's `prometheus` package) scraping a small exporter whose
per-host values a test sets, with real alerting rules, on short intervals.

`HostMetrics` serves `/metrics` in Prometheus' text exposition format for every lab host at once;
each host is its own scrape target (`/metrics/<host>`), labelled `host` and `cluster` by the scrape
config, as a node exporter per host would be.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from bot.embedded import ManagedProcess, find_binary, free_port, log_file_for, spawn, wait_until
from lab.processes import answers


class HostMetrics:
    """An exporter: `set(host, name, value)` changes what `/metrics/<host>` says from now on."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self._values: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.removeprefix("/metrics/")
                body = metrics.exposition(name).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host, port or free_port(host)), Handler)
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def set(self, host: str, name: str, value: float) -> None:
        with self._lock:
            self._values.setdefault(host, {})[name] = value

    def exposition(self, host: str) -> str:
        with self._lock:
            values = dict(self._values.get(host, {}))
        return "".join(f"{name} {value}\n" for name, value in sorted(values.items()))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_prometheus(
    root: Path,
    exporter: HostMetrics,
    hosts: Mapping[str, str],
    rules: list[dict[str, Any]],
    *,
    interval: str = "1s",
) -> ManagedProcess:
    """Start `prometheus` with its data in `root`, scraping `exporter` for each of `hosts`
    (host -> cluster) every `interval` and evaluating `rules` (Prometheus rule dicts: alert,
    expr, for, labels) as often. Returns once `/-/ready` answers 200; `.address` is the URL."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "lab", "rules": rules}]}))
    scrape = [
        {
            "job_name": f"host-{host}",
            "metrics_path": f"/metrics/{host}",
            "static_configs": [
                {"targets": [exporter.address], "labels": {"host": host, "cluster": cluster}}
            ],
        }
        for host, cluster in hosts.items()
    ]
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(root / "rules.yml")],
        "scrape_configs": scrape,
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        find_binary("prometheus"),
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    log = log_file_for(root / "prometheus.log", "prometheus-")
    address = f"http://127.0.0.1:{port}"
    managed = ManagedProcess(spawn(argv, log), address, log)

    wait_until("prometheus", managed, answers(f"{address}/-/ready"), timeout=30, interval=0.1)
    return managed
