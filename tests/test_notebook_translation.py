"""The Romanian notebook (notebooks/transfer_learning.ro.ipynb) is the English one with its text in Romanian: the same
cells in the same order, every code cell identical, every markdown cell translated, committed without outputs.

JSON only, no kernel, so it stays in the quick loop (tests/test_notebook.py, a slow file, executes the English one;
identical code cells are what let that run stand for both)."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from helpers import REPO

ENGLISH = REPO / "notebooks" / "transfer_learning.ipynb"
ROMANIAN = REPO / "notebooks" / "transfer_learning.ro.ipynb"


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def first_difference(english: str, romanian: str) -> str:
    """The first line that differs, as a two-line diff."""
    diff = difflib.unified_diff(english.splitlines(), romanian.splitlines(), ENGLISH.name, ROMANIAN.name, n=0)
    return "\n".join(line for line in list(diff)[3:5])


def test_the_romanian_notebook_is_the_english_one_translated_cell_by_cell() -> None:
    en, ro = cells(ENGLISH), cells(ROMANIAN)
    assert len(ro) == len(en), f"{ROMANIAN.name} has {len(ro)} cells, {ENGLISH.name} {len(en)}: the same cells"

    kinds = [i for i, (e, r) in enumerate(zip(en, ro, strict=True)) if e["cell_type"] != r["cell_type"]]
    assert not kinds, (
        f"cell {kinds[0]} is {ro[kinds[0]]['cell_type']} in {ROMANIAN.name}, {en[kinds[0]]['cell_type']} in "
        f"{ENGLISH.name}: the same cell types in the same order"
    )

    pairs = list(enumerate(zip(en, ro, strict=True)))
    code = [
        i
        for i, (e, r) in pairs
        if e["cell_type"] == "code" and (source(e), e["metadata"]) != (source(r), r["metadata"])
    ]
    if code:
        i = code[0]
        raise AssertionError(
            f"code cell {i} of {ROMANIAN.name} differs from {ENGLISH.name}'s (code cells {code}): the code is the "
            f"same in both, only the text is translated\n{first_difference(source(en[i]), source(ro[i]))}"
        )

    copied = [i for i, (e, r) in pairs if e["cell_type"] == "markdown" and source(e) == source(r)]
    assert not copied, (
        f"markdown cell {copied[0]} of {ROMANIAN.name} is the English text (cells {copied}): translate it"
    )

    dirty = [i for i, c in enumerate(ro) if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])]
    assert not dirty, (
        f"code cell {dirty[0]} of {ROMANIAN.name} holds outputs (cells {dirty}): commit it stripped "
        f"(jupyter nbconvert --clear-output --inplace {ROMANIAN.relative_to(REPO)})"
    )

    text = "\n".join(source(c) for c in ro if c["cell_type"] == "markdown")
    for term in ["învățarea prin transfer", "înghețat"]:  # the course's own terms
        assert term in text.lower(), f"{ROMANIAN.name}'s text never says {term!r}"
    cedilla = [i for i, c in enumerate(ro) if c["cell_type"] == "markdown" and any(ch in source(c) for ch in "şţŞŢ")]
    assert not cedilla, f"markdown cell {cedilla[0]} of {ROMANIAN.name} writes ş/ţ with a cedilla: ș/ț (comma below)"

    assert ROMANIAN.name in source(en[0]) and ENGLISH.name in source(ro[0]), "each notebook links the other at its top"
