"""Result files: never written over, never half-written."""

from pathlib import Path

from lit_transfer.files import atomic_write, unused_path


def test_unused_path_never_names_an_existing_file(tmp_path: Path) -> None:
    first = tmp_path / "results.json"
    assert unused_path(first) == first
    atomic_write(first, "a")
    second = unused_path(first)
    assert second.name == "results-1.json"
    atomic_write(second, "b")
    (tmp_path / "results-1.json").rename(tmp_path / "results-2.json")  # a gap: the count now names a taken file
    third = unused_path(first)
    assert not third.exists() and third.name == "results-3.json"
    assert first.read_text() == "a" and (tmp_path / "results-2.json").read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results-2.json", "results.json"]  # no temporary left
