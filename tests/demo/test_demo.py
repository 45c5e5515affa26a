"""`patchpilot demo` end to end, as a user runs it: the console script, real servers, real sshd."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from bot.cli.demo import DemoOptions, lab_requirements_problem, run_demo
from lab import free_port

PATCHPILOT = str(Path(sys.executable).parent / "patchpilot")
# Not the demo's default 127.0.1.: a developer's own demo may be running next to the tests.
PREFIX = "127.0.5."
RUN_TIMEOUT = 180

pytestmark = pytest.mark.skipif(
    lab_requirements_problem() is not None, reason=f"sshd lab: {lab_requirements_problem()}"
)


def demo_env() -> dict[str, str]:
    # A developer's own configuration must not reach the demo, and must not be needed.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PATCHPILOT_", "VAULT_", "TEMPORAL_", "SLACK_"))
    }
    env["COLUMNS"] = "200"
    return env


class DemoRun:
    """The demo as a subprocess in a process group of its own, its output collected live."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [PATCHPILOT, "demo", "--data-dir", str(data_dir), "--address-prefix", PREFIX, *args],
            # A pipe, not a terminal: with --keep-open the demo waits for a line on it.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=demo_env(),
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.output):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no line matching {pattern!r}:\n{self.output}")
            time.sleep(0.05)

    def press_enter(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def stop_when_kept_open(self, metrics_port: int) -> dict[str, float]:
        """Wait for the demo to keep its servers open, scrape the worker's metrics, press Enter;
        returns the metrics."""
        self.wait_for_line(r"Press Enter \(or Ctrl-C\) to stop them")
        metrics = scrape(metrics_port)
        self.press_enter()
        return metrics

    def interrupt(self) -> None:
        """Ctrl-C as a terminal sends it: SIGINT to the foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self, timeout: float = RUN_TIMEOUT) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(
                f"the demo did not end within {timeout}s:\n{self.output}"
            ) from None
        self._reader.join(timeout=10)
        return code


def scrape(port: int) -> dict[str, float]:
    """PatchPilot's series from the metrics endpoint, as 'name{label="v",...}' -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    series: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("patchpilot_"):
            continue
        name_and_labels, _, value = line.rpartition(" ")
        series[name_and_labels] = float(value)
    return series


def total(series: dict[str, float], name: str, **labels: str) -> float:
    """Sum of a metric's series that carry all of ``labels``."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(
        value
        for key, value in series.items()
        if key.partition("{")[0] == name and all(w in key for w in wanted)
    )


def listening(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def endpoints(output: str) -> list[tuple[str, int]]:
    """Every server address the demo printed: Temporal, OpenBao and each lab host."""
    found = [
        (m.group(1), int(m.group(2))) for m in re.finditer(r"(127\.0\.\d+\.\d+):(\d+)", output)
    ]
    assert found, output
    return sorted(set(found))


def assert_nothing_left(run: DemoRun) -> None:
    """No process of the demo's servers or lab hosts, and none of their ports open."""
    left = subprocess.run(
        ["pgrep", "-af", str(run.data_dir)], capture_output=True, text=True
    ).stdout.strip()
    assert left == "", f"processes left behind:\n{left}"
    still_open = [f"{a}:{p}" for a, p in endpoints(run.output) if listening(a, p)]
    assert still_open == [], f"still listening after the demo: {still_open}\n{run.output}"


def test_ctrl_c_stops_everything_then_a_demo_rollout_succeeds(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"

    interrupted = DemoRun(data_dir, "--auto-approve", "--headless")
    interrupted.wait_for_line(r"▶ cluster-a/a1 \(pilot\) started")
    interrupted.interrupt()
    assert interrupted.finish(timeout=60) == 130, interrupted.output
    assert "interrupted: stopping everything the demo started" in interrupted.output
    assert_nothing_left(interrupted)

    # Same data directory: the Temporal database keeps the interrupted rollout, which the next
    # demo ends before patching the same hosts again.
    ui_port, metrics_port = free_port(), free_port()
    started = time.monotonic()
    run = DemoRun(
        data_dir,
        "--auto-approve",
        "--ui-port",
        str(ui_port),
        "--metrics-port",
        str(metrics_port),
        "--keep-open",
        "--log-format",
        "json",
    )
    run.wait_for_line(r"follow it in the Temporal Web UI: http://localhost:\d+/")
    ui = httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=10, follow_redirects=True)
    assert ui.status_code == 200 and "<html" in ui.text.lower()
    metrics = run.stop_when_kept_open(metrics_port)
    took = time.monotonic() - started
    code = run.finish()
    out = run.output
    assert code == 0, out
    assert "ended 1 rollout(s) left running by an earlier demo" in out
    assert "6 real-apt sshd hosts in 2 clusters" in out
    assert "approved by approver@demo.patchpilot.example (--auto-approve)" in out
    for host in ["a1", "a2", "a3", "b1", "b2", "b3"]:
        assert re.search(rf"✓ cluster-./{host}( \(pilot\))? patched in", out), (host, out)
    # Pilots first: a1 is done before a2 or a3 starts, b1 before b2 or b3.
    assert out.index("✓ cluster-a/a1 (pilot) patched") < out.index("▶ cluster-a/a2 started")
    assert out.index("✓ cluster-b/b1 (pilot) patched") < out.index("▶ cluster-b/b2 started")
    assert "patched 6, failed 0, skipped 0" in out
    assert "Rollout succeeded: 6 hosts patched" in out
    assert f"Temporal Web UI: http://localhost:{ui_port}/namespaces/default/workflows/demo-" in out
    # approval request + start and success per host + summary
    assert "E-mail notifications sent: 14" in out
    assert len(list((data_dir / "mail").glob("*.eml"))) == 14
    # The worker's metrics, scraped after the rollout: one patched host per host patched.
    assert total(metrics, "patchpilot_hosts_patched") == 6, metrics
    assert total(metrics, "patchpilot_hosts_patched", cluster="cluster-a") == 3
    assert total(metrics, "patchpilot_hosts_failed") == 0
    assert total(metrics, "patchpilot_hosts_in_maintenance") == 0
    assert total(metrics, "patchpilot_rollouts", phase="succeeded") == 1
    assert (
        total(
            metrics,
            "patchpilot_step_duration_seconds_count",
            activity_type="PerformUpdateActivity",
            outcome="ok",
        )
        == 6
    )
    # JSON logs: each step's line names its rollout, host and step.
    records = [json.loads(line) for line in (data_dir / "demo.log").read_text().splitlines()]
    updates = [
        r for r in records if r.get("message", "").startswith("step PerformUpdateActivity on")
    ]
    assert {r["host"] for r in updates} == {"a1", "a2", "a3", "b1", "b2", "b3"}
    assert all(r["rollout_id"].startswith("demo-") and r["step"] for r in updates)
    assert_nothing_left(run)
    print(f"demo rollout took {took:.1f}s")


def test_fail_host_ends_in_the_failure_summary_with_a_non_zero_exit(tmp_path: Path) -> None:
    metrics_port = free_port()
    run = DemoRun(
        tmp_path / "demo",
        "--auto-approve",
        "--headless",
        "--hosts-per-cluster",
        "2",
        "--fail-host",
        "a2",
        "--metrics-port",
        str(metrics_port),
        "--keep-open",
    )
    metrics = run.stop_when_kept_open(metrics_port)
    code = run.finish()
    out = run.output
    assert code == 1, out
    assert "fault: the update on a2 will fail" in out
    assert "✓ cluster-a/a1 (pilot) patched" in out
    assert "✗ cluster-a/a2 failed at step update" in out
    # Real apt and dpkg on the lab hosts: pp-broken's postinst fails, dpkg says so, apt exits 100.
    assert "6 real-apt sshd hosts" in out or "4 real-apt sshd hosts" in out
    assert "update command on a2 exited 100" in out
    assert "E: Sub-process /usr/bin/dpkg returned an error code (1)" in out
    assert "Rollout failed: host a2 failed at step update" in out
    assert "patched 1, failed 1, skipped 2" in out
    assert "cluster-a/a2: failed at update" in out and "[IN MAINTENANCE]" in out
    for host in ["b1", "b2"]:
        assert f"cluster-b/{host}: skipped" in out
    assert "Rollout succeeded" not in out
    assert total(metrics, "patchpilot_hosts_patched") == 1, metrics
    assert total(metrics, "patchpilot_hosts_failed", cluster="cluster-a", step="update") == 1
    assert total(metrics, "patchpilot_hosts_in_maintenance") == 1  # a2, left for the operator
    assert total(metrics, "patchpilot_rollouts", phase="failed") == 1
    assert_nothing_left(run)


def test_bad_options_are_refused_before_anything_starts(tmp_path: Path) -> None:
    shown = io.StringIO()
    options = DemoOptions(auto_approve=True, fail_host="z9", data_dir=tmp_path / "demo")
    assert run_demo(options, Console(file=shown, width=200)) == 2
    assert "--fail-host 'z9' is not a demo host (a1, a2, a3, b1, b2, b3)" in shown.getvalue()
    assert not (tmp_path / "demo").exists()

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        options = DemoOptions(ui_port=busy.getsockname()[1], data_dir=tmp_path / "demo")
        assert run_demo(options, Console(file=shown, width=200)) == 2
    finally:
        busy.close()
    assert "is already in use; pick another port or --headless" in shown.getvalue()


def test_without_sshd_the_demo_runs_on_its_asyncssh_lab(tmp_path: Path) -> None:
    run = DemoRun(
        tmp_path / "demo",
        "--auto-approve",
        "--headless",
        "--hosts-per-cluster",
        "1",
        "--lab",
        "asyncssh",
        "--no-keep-open",
    )
    code = run.finish()
    out = " ".join(run.output.split())
    assert code == 0, run.output
    assert "using the built-in asyncssh lab (simulated hosts, not OpenSSH)" in out
    assert "Rollout succeeded: 2 hosts patched" in out
    assert_nothing_left(run)
