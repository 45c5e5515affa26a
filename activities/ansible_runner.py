"""`ansible-inventory ARGS` in another process, cheaply: through one `activities.ansible_server`
fork server per PatchPilot process (about 0.1 s a small reading instead of 0.5 s), or as its own
`python -m ansible.cli.inventory` process when the server is busy or cannot be used.

Both ways run the same Ansible code with the same arguments, environment and working directory,
and give the same exit code, standard output and standard error; Ansible (GPL) never runs inside
a PatchPilot process. The server is started on first use, and again whenever the environment,
the working directory or an ansible.cfg Ansible would read has changed since it started (Ansible
reads those once, at import). It serves one reading at a time; a concurrent reading runs as its
own process rather than wait.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SERVER = [sys.executable, str(Path(__file__).with_name("ansible_server.py"))]
# Variables that change without changing what Ansible does (pytest names the running test in
# one); a change of any other variable starts a new server.
VOLATILE = frozenset({"PYTEST_CURRENT_TEST"})
# Seconds to wait for a new server to have imported Ansible.
START_TIMEOUT_SECONDS = 60.0


def run_inventory_cli(
    args: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """`ansible-inventory ARGS` with `env` (os.environ plus Ansible settings) as its environment.

    Raises subprocess.TimeoutExpired after `timeout` seconds (the reading is killed).
    """
    done = _SERVER.run(args, env, timeout)
    if done is not None:
        return done
    return subprocess.run(
        [sys.executable, "-m", "ansible.cli.inventory", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def _config_files(env: dict[str, str]) -> tuple[Any, ...]:
    """The ansible.cfg files Ansible would look at, each with its modification time and size
    (https://docs.ansible.com/ansible/latest/reference_appendices/config.html)."""
    candidates = [
        env.get("ANSIBLE_CONFIG", ""),
        "ansible.cfg",
        str(Path("~/.ansible.cfg").expanduser()),
        "/etc/ansible/ansible.cfg",
    ]
    seen: list[Any] = []
    for name in candidates:
        if not name:
            continue
        try:
            stat = Path(name).stat()
            seen.append((name, stat.st_mtime_ns, stat.st_size))
        except OSError:
            seen.append((name, None))
    return tuple(seen)


class ForkServer:
    """The client side of `activities.ansible_server`; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._key: tuple[Any, ...] | None = None
        self.started = 0  # servers started (tests read it)

    def run(
        self, args: list[str], env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str] | None:
        """The reading, or None when the server is busy or cannot be used (then the caller runs
        `ansible-inventory` itself). Raises subprocess.TimeoutExpired as subprocess.run does."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            process = self._ready(env)
            if process is None or process.stdin is None:
                return None
            with tempfile.TemporaryDirectory(prefix="patchpilot-ansible-") as scratch:
                out, err = Path(scratch) / "stdout", Path(scratch) / "stderr"
                request = {"argv": args, "stdout": str(out), "stderr": str(err)}
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
                answer = self._answer(process, timeout)
                if answer is None:
                    self._stop()
                    raise subprocess.TimeoutExpired(["ansible-inventory", *args], timeout)
                code = int(json.loads(answer)["rc"])
                return subprocess.CompletedProcess(
                    ["ansible-inventory", *args],
                    code,
                    out.read_text(errors="replace") if out.exists() else "",
                    err.read_text(errors="replace") if err.exists() else "",
                )
        except (OSError, ValueError, KeyError):  # a server that died: start another next time
            self._stop()
            return None
        finally:
            self._lock.release()

    def _ready(self, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
        """The running server for `env` and the current directory, started when needed."""
        steady = {name: value for name, value in env.items() if name not in VOLATILE}
        key = (tuple(sorted(steady.items())), os.getcwd(), _config_files(env))
        if self._process is not None and (self._key != key or self._process.poll() is not None):
            self._stop()
        if self._process is None:
            self._process = subprocess.Popen(
                SERVER,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # a server that cannot start: the fallback says why
                env=env,
                start_new_session=True,  # its readings are in its process group: killed with it
            )
            self._key = key
            self.started += 1
            if self._answer(self._process, START_TIMEOUT_SECONDS) is None:
                self._stop()
        return self._process

    @staticmethod
    def _answer(process: subprocess.Popen[bytes], timeout: float) -> bytes | None:
        """One line from the server within `timeout` seconds; None when none came (ValueError
        when the server ended)."""
        assert process.stdout is not None
        fd = process.stdout.fileno()
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise ValueError("the Ansible fork server ended")
            line += chunk
        return line

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):  # already gone
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        """Stop the server (at exit; a server also ends when its input does)."""
        with self._lock:
            self._stop()


_SERVER = ForkServer()
atexit.register(_SERVER.close)
