"""Every guarantee broken on purpose is noticed: the mutations of tests/mutations.py that the quick tests must catch,
each in a temporary copy of the repository. The rest (their tests train, start servers, Ray or a browser): run
``python tests/mutations.py`` after changing a guarantee or its test (README, developer section)."""

from __future__ import annotations

import sys

import process_guard
import pytest
from helpers import REPO


@pytest.mark.slow  # about two minutes: a pytest run per mutation
def test_every_quick_mutation_is_caught() -> None:
    done = process_guard.run(
        [sys.executable, "tests/mutations.py", "--quick"], cwd=REPO, timeout=900, capture_output=True, text=True
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    assert done.returncode == 0, (
        "a mutation survived:\n"
        + "\n".join(line for line in done.stdout.splitlines() if line.startswith("MISSED"))
        + f"\n{summary}"
    )
    assert " of " in summary and "caught" in summary, summary
