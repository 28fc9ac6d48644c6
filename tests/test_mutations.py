"""Every guarantee broken on purpose is noticed: the mutations of tests/mutations.py that the quick tests must catch,
one test each, in a temporary copy of the repository. The rest (their tests train, start servers, Ray or a browser):
run ``python tests/mutations.py`` after changing a guarantee or its test (README, developer section)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mutations import MUTATIONS, Mutation, copy_of_repository, quick, run_one

# One test per mutation, so a survivor fails under its own name. Also so that pytest-xdist, which hands out the
# files with the most tests first (--dist loadfile), starts this file early instead of leaving it, a two-minute
# file, to run alone at the end of CI's run.
QUICK = [m for m in MUTATIONS if quick(m)]


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_of_repository(tmp_path_factory.mktemp("mutations"))


@pytest.mark.slow  # several seconds each: a pytest run in the copy
@pytest.mark.parametrize("mutation", QUICK, ids=[m.name for m in QUICK])
def test_the_quick_tests_catch(mutation: Mutation, copy: Path) -> None:
    caught, detail = run_one(mutation, copy)
    assert caught, f"MISSED {mutation.name}: {detail}"
