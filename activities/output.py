"""What a host prints, kept safely: bytes decoded leniently, only a bounded head and tail kept.

A host may print anything: bytes that are not UTF-8 (apt under a Latin-1 locale), gigabytes of
progress lines, a prompt repeated forever. None of that may turn a finished command into an error
or grow the worker's memory, so every command's stdout and stderr go through `BoundedOutput`.
"""

from __future__ import annotations

import asyncio
import re

import asyncssh

# Enough for every message PatchPilot shows (failure reasons keep the last 2,000 characters) and
# for a long list of pending updates; the same for every command, whatever the host prints.
HEAD_BYTES = 16 * 1024
TAIL_BYTES = 64 * 1024
_CHUNK = 64 * 1024
# A first line (the pid marker) is looked for this far, never further.
_FIRST_LINE_LIMIT = 4096
# A line that asks something: ends in "[y/N]", "(yes/no)", a question mark, or "password:".
_PROMPT = re.compile(rb"(\[[yY]/[nN]\]|\([yY]es/[nN]o\)|\?|(password|passphrase)[^:]*:)\s*$", re.I)
# Stdin is at EOF, so a program that asks again after each empty answer repeats its question for
# ever (ansible/ansible#51289's kind); this many times in a row is no progress message.
PROMPT_REPEATS = 20
_PROMPT_WINDOW = 200


def decode(data: bytes) -> str:
    """UTF-8 with U+FFFD for every byte that is not: never a UnicodeDecodeError.

    Hosts print in their own locale (dpkg and apt translate their messages, e.g. Latin-1 under
    fr_FR.ISO-8859-1); the text is for people, so a replaced byte is better than a lost result.
    """
    return data.decode("utf-8", errors="replace")


class BoundedOutput:
    """The first `head` and the last `tail` bytes of one output stream, and how many in all.

    Memory stays at most `head + 2 * tail` bytes whatever is fed; `text()` marks the gap with
    how many bytes were left out, so nobody mistakes a cut output for a whole one.
    """

    def __init__(self, head: int = HEAD_BYTES, tail: int = TAIL_BYTES) -> None:
        self._head_limit = head
        self._tail_limit = tail
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0  # bytes received, kept or not

    def feed(self, data: bytes) -> None:
        """Take the next chunk of the stream."""
        self.total += len(data)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            # Trimmed only when twice the limit: one copy per `tail` bytes, not per chunk.
            if len(self._tail) > 2 * self._tail_limit:
                del self._tail[: len(self._tail) - self._tail_limit]

    @property
    def omitted(self) -> int:
        """Bytes received but not kept (0 when the whole stream is kept)."""
        return self.total - len(self._head) - min(len(self._tail), self._tail_limit)

    @property
    def complete(self) -> bool:
        """Whether `text()` is the whole stream."""
        return self.omitted == 0

    def text(self) -> str:
        """The kept bytes, decoded leniently; a cut stream says where and how much was cut."""
        tail = bytes(self._tail[-self._tail_limit :]) if self._tail_limit else b""
        if self.omitted:
            gap = f"\n[… {self.omitted} bytes of output not kept …]\n"
            return decode(bytes(self._head)) + gap + decode(tail)
        return decode(bytes(self._head) + tail)


class PromptWatch:
    """Notices a command that repeats the same question: its output's last line, looked at once
    per chunk (a regex and a count in C, not a scan per line in Python)."""

    def __init__(self) -> None:
        self._line = b""
        self._seen = 0
        self.prompt: str | None = None  # set once the question has repeated PROMPT_REPEATS times

    def feed(self, data: bytes) -> None:
        """Take the next chunk of one stream."""
        body = data.rstrip(b"\r\n")
        start = max(body.rfind(b"\n") + 1, len(body) - _PROMPT_WINDOW)
        line = _last_question(body[start:].strip())
        if len(line) < 6 or not _PROMPT.search(line):
            self._line, self._seen = b"", 0
            return
        repeats = data.count(line)
        self._seen = self._seen + repeats if line == self._line else repeats
        self._line = line
        if self._seen >= PROMPT_REPEATS:
            self.prompt = decode(line)


def _last_question(line: bytes) -> bytes:
    """A prompt printed again and again without a newline is one long "line": its shortest
    repeating unit, ending where the line ends, is the question (the line itself otherwise)."""
    for period in range(6, len(line) // 2 + 1):
        if line[period:] == line[:-period]:
            return line[-period:].strip()
    return line


class OutputStreams:
    """Reads a process's stdout and stderr as bytes into bounded buffers; `remote_pid` is the
    number `first_line` (a bytes pattern with one group) matched at the start of stderr."""

    def __init__(
        self,
        process: asyncssh.SSHClientProcess[bytes],
        head: int,
        tail: int,
        first_line: re.Pattern[bytes],
    ) -> None:
        self._first_line = first_line
        self.prompts = (PromptWatch(), PromptWatch())
        # Set when either stream keeps asking a question (see PromptWatch).
        self.waiting_for_input = asyncio.Event()
        self.stdout = BoundedOutput(head, tail)
        self.stderr = BoundedOutput(head, tail)
        self.remote_pid: int | None = None
        self._tasks = [
            asyncio.ensure_future(self._drain(process.stdout, self.stdout, self.prompts[0])),
            asyncio.ensure_future(self._read_stderr(process.stderr)),
        ]

    @property
    def prompt(self) -> str | None:
        """The question a stream keeps repeating, if one does."""
        return self.prompts[0].prompt or self.prompts[1].prompt

    async def _drain(
        self, reader: asyncssh.SSHReader[bytes], into: BoundedOutput, watch: PromptWatch
    ) -> None:
        while chunk := await reader.read(_CHUNK):
            into.feed(chunk)
            watch.feed(chunk)
            if watch.prompt is not None:
                self.waiting_for_input.set()

    async def _read_stderr(self, reader: asyncssh.SSHReader[bytes]) -> None:
        # The marker is the first line we asked for; a login banner or a refusing ForceCommand
        # may come first instead, and a first "line" is never allowed to grow without bound.
        first = b""
        while b"\n" not in first and len(first) < _FIRST_LINE_LIMIT:
            chunk = await reader.read(_FIRST_LINE_LIMIT)
            if not chunk:
                break
            first += chunk
        match = self._first_line.match(first)
        if match:
            self.remote_pid = int(match.group(1))
            first = first[match.end() :]
        self.stderr.feed(first)
        self.prompts[1].feed(first)
        await self._drain(reader, self.stderr, self.prompts[1])

    async def finish(self, timeout: float) -> None:
        """Wait for both streams to reach EOF (they do right after the channel closes)."""
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout=timeout)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
