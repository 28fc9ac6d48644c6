"""Result files: never written over, never half-written."""

from pathlib import Path

import pytest

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


def test_threads_writing_one_path_at_once_each_leave_it_whole(tmp_path: Path) -> None:
    # The demo's threads write the same picture at once (one file per content); each write must succeed and leave
    # the whole content, never a half-written or vanished temporary file (a temporary per process would be shared).
    import threading

    path, data = tmp_path / "picture.png", bytes(range(256)) * 4096  # 1 MiB: long enough for writes to overlap
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def write() -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(20):
                atomic_write(path, data)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert path.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["picture.png"]  # no temporary left behind


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    atomic_write(path, b"old")

    def broken(f) -> None:
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
