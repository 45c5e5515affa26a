"""A throw-away Debian root with the real apt and dpkg: an overlay of this machine's `/` in a
private mount namespace, the lab repository (lab/apt_repo.py) as its only apt source.

The second part of the real-apt lab (issue 15): what a script does to packages here is done by the
real dpkg to a copy-on-write view of the machine's own userland, kept on a tmpfs that vanishes with
the namespace, so nothing of the machine's package state changes. lab/apt_lab.py runs the
lab's sshd hosts in roots like this one. Needs root, `unshare`, `mount` and overlayfs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_MOUNT = "/srv/patchpilot-repo"

# $1: a directory for the root, $2: the repository, $3: the script. The upper and work
# directories live on a tmpfs of their own: overlayfs refuses an upper directory on overlayfs
# (the usual root of a container), and the tmpfs goes away with the namespace.
_SCRIPT = f"""set -e
fs=$1/fs
mkdir -p "$fs"
mount -t tmpfs patchpilot-apt-root "$fs"
mkdir -p "$fs/upper" "$fs/work" "$fs/merged"
mount -t overlay overlay -o "lowerdir=/,upperdir=$fs/upper,workdir=$fs/work" "$fs/merged"
for d in proc dev sys; do mount --rbind "/$d" "$fs/merged/$d"; done
mkdir -p "$fs/merged{REPO_MOUNT}"
mount --bind "$2" "$fs/merged{REPO_MOUNT}"
# The lab repository is the only source: the machine's own sources are hidden in the overlay.
rm -f "$fs/merged/etc/apt/sources.list.d/"*
echo "deb [trusted=yes] file:{REPO_MOUNT} ./" > "$fs/merged/etc/apt/sources.list"
exec chroot "$fs/merged" sh -c "$3"
"""


def run_in_apt_root(
    root: Path, repo: Path, script: str, *, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `script` with sh in a fresh apt root (see the module doc) and return its result,
    stdout and stderr as text, exit status unchecked. `root` is a directory for the root's
    mount points; `repo` a repository built by `lab.apt_repo.build_repo` (mounted at
    REPO_MOUNT). subprocess.TimeoutExpired after `timeout` seconds."""
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _SCRIPT,
            "patchpilot-apt-root",
            str(root),
            str(repo),
            script,
        ],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )
