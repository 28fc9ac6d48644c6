"""What a run prints is ours or useful: the library messages that are noise for this program, silenced here.

Each filter names what it hides and why it is noise here; everything else (Lightning's own warnings included)
still shows, and the test suite turns our own warnings into errors (pyproject.toml).
"""

from __future__ import annotations

import logging
import warnings


class _DropTips(logging.Filter):
    """Lightning 2.6 logs an advertisement for its cloud logger ("💡 Tip: ... litlogger") at every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet() -> None:
    """Install the filters (idempotent); called by ``python -m lit_transfer`` before Lightning starts."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in log.filters):
            log.addFilter(_DropTips())
    # Lightning 2.6's own pytree helper calls a function torch 2.14 deprecated; nothing we call or can change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    # Every resumed, tested or validated run has a new run folder by design (run_dirs.py), so the checkpoint
    # callbacks' stored folder always differs from the current one; their files are never written there.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    # test/validate/predict of a checkpoint whose run had other callbacks (FreezeFeatures): an evaluation restores
    # no callback state, so Lightning's advice to add them would change nothing.
    warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create")
