"""Writing result files safely: never over an existing file, never half-written."""

from __future__ import annotations

import os
from pathlib import Path


def unused_path(path: Path) -> Path:
    """``path`` if free, else the first free ``<stem>-<n><suffix>`` beside it (a second ``test`` or ``predict`` in
    one run directory), counting from the number of files of that stem so the names follow in order."""
    if not path.exists():
        return path
    n = len(list(path.parent.glob(f"{path.stem}*{path.suffix}")))
    while (candidate := path.with_name(f"{path.stem}-{n}{path.suffix}")).exists():
        n += 1
    return candidate


def atomic_write(path: Path, text: str, newline: str | None = None) -> None:
    """Write through a temporary file renamed into place: a crash leaves the old file or the new one, never half.
    ``newline`` as for ``open`` (``""`` for CSV text, which holds its own line ends)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, newline=newline)
    os.replace(tmp, path)
