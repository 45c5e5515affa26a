"""The known_hosts file a worker checks host keys against (activities/ssh.py), each version of
it parsed once."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import asyncssh

__all__ = ["RACY_SECONDS", "KnownHostsFile"]

# A file changed less than this long before it was read may change again within the same
# timestamp tick, its inode, mtime and size all unchanged (git's "racily clean" index entries):
# until then its bytes are read again at every look.
RACY_SECONDS = 2.0


class KnownHostsFile:
    """The known_hosts file the host keys are checked against, each version of it parsed once.

    Given a path, asyncssh parses the file at every connection: ~15 ms of worker CPU per 1,000
    lines, 151 ms a host with a 10,000-host fleet's file (measured; issue 16). `version()` is a
    sha256 of the file's bytes ("" when it cannot be read); the bytes are read again only when
    the file's inode, mtime or size changed, or while it was changed less than RACY_SECONDS
    before it was last read. `keys()` is the current version with its keys.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stat: tuple[int, int, int] | None = None
        self._stat_settled = False
        self._version = ""
        self._data = b""
        self._parsed: tuple[str, asyncssh.SSHKnownHosts] | None = None
        self._lock = asyncio.Lock()

    def version(self) -> str:
        """The file's version now: a sha256 of its bytes, "" when it cannot be read."""
        try:
            stat = self.path.stat()
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if key == self._stat and self._stat_settled:
                return self._version
            data = self.path.read_bytes()
        except OSError:
            self._stat, self._version, self._data = None, "", b""
            return ""
        self._stat = key
        self._stat_settled = time.time_ns() - stat.st_mtime_ns > RACY_SECONDS * 1e9
        self._version, self._data = hashlib.sha256(data).hexdigest(), data
        return self._version

    async def keys(self) -> tuple[str, asyncssh.SSHKnownHosts]:
        """The version now and its keys (parsed in a thread, once for each version)."""
        version, data = self.version(), self._data
        async with self._lock:
            if self._parsed is None or self._parsed[0] != version:
                text = data.decode(errors="replace")
                self._parsed = (version, await asyncio.to_thread(asyncssh.import_known_hosts, text))
            return self._parsed
