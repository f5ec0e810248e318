"""Files that hold personal data or secrets are created readable by their owner only.

The SQLite store holds names, addresses and phone numbers; a ``.env`` holds API keys. A
file created with ``open()`` gets ``0666`` less the umask, which is world-readable under
the usual ``022``. These helpers create such files ``0600`` from the start (no window in
which another user could open them) whatever the umask.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PRIVATE_MODE", "create_private", "write_private_text"]

PRIVATE_MODE = 0o600


def create_private(path: Path) -> bool:
    """Create ``path`` empty and ``0600`` unless it exists; return whether it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def write_private_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``, which is ``0600`` afterwards even if it existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        # An existing file keeps its old mode through O_CREAT; tighten it before writing.
        os.fchmod(handle.fileno(), PRIVATE_MODE)
        handle.write(text)
