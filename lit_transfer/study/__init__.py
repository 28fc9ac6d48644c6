"""The transfer study: ``python -m lit_transfer.study`` (runner.py), which runs (plan.py), its report."""

from lit_transfer.study.runner import main, run_study

__all__ = ["main", "run_study"]
