"""The transfer study: ``python -m lit_transfer.study`` (runner.py), which runs (plan.py), its report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["main", "run_study"]

if TYPE_CHECKING:
    from lit_transfer.study.runner import main, run_study


def __getattr__(name: str) -> Any:
    # Imported on first use (PEP 562): ``python -m lit_transfer.study`` checks the install first (__main__.py).
    if name in __all__:
        from lit_transfer.study import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'lit_transfer.study' has no attribute {name!r}")
