"""Writing files safely: never over an existing result, never half-written.

``atomic_write`` is the one way this package writes a file it may later read or a user keeps: results, reports,
checkpoints and the image cache.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def unused_path(path: Path) -> Path:
    """``path`` if free, else the first free ``<stem>-<n><suffix>`` beside it (a second ``test`` or ``predict`` in
    one run directory), counting from the number of files of that stem so the names follow in order."""
    if not path.exists():
        return path
    n = len(list(path.parent.glob(f"{path.stem}*{path.suffix}")))
    while (candidate := path.with_name(f"{path.stem}-{n}{path.suffix}")).exists():
        n += 1
    return candidate


def atomic_write(
    path: str | os.PathLike, content: str | bytes | Callable[[BinaryIO], None], durable: bool = True
) -> None:
    """Write ``content`` (text as UTF-8, bytes, or a function that writes into the open binary file, such as
    ``lambda f: torch.save(obj, f)``) to a temporary file beside ``path``, then rename it over ``path``: a reader
    sees the old file or the new one, never half of one. ``durable``: flush it to the disk first, so a crash of the
    machine cannot leave a renamed but empty file (results, checkpoints); off for files that are rebuilt anyway (the
    demo's pictures). The folder must exist."""
    path = Path(path)
    # One temporary file per call ("x": created, never shared): two threads of a process may write one path at once.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    finally:
        tmp.unlink(missing_ok=True)
