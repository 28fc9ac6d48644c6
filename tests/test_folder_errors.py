"""Bad image folders and predict paths: one line naming the file or folder, a non-zero exit, nothing written into
the user's folder (nor a cache, nor a run)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from helpers import folder_args, snapshot, write_image_folder
from PIL import Image
from test_errors import fails, nothing_written


def truncated_png() -> bytes:
    """A PNG of 64x64 noise cut off halfway through its pixel data."""
    image = Image.effect_noise((64, 64), 80)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def damage(folder: Path, how: str) -> tuple[list[str], list[str]]:
    """Break the folder one way; returns (extra CLI arguments, what the message must contain)."""
    train = folder / "train"
    bad = train / "bar1" / "00003.png"
    if how == "unreadable":
        bad.write_bytes(b"this is not an image")
        return [], [str(bad), "not a readable image"]
    if how == "truncated":
        bad.write_bytes(truncated_png())
        return [], [str(bad), "not a readable image", "truncated"]
    if how == "blank":
        Image.new("RGB", (40, 30), "white").save(bad)
        return [], [str(bad), "blank"]
    if how == "empty class":
        (train / "bar7").mkdir()
        return [], [f"class folder {train / 'bar7'} holds no images"]
    if how == "missing class":
        return ["--data.classes=[bar0,cat]"], [f"class 'cat' (--data.classes) is not a folder in {train}"]
    if how == "different classes":
        shutil.rmtree(folder / "test" / "bar2")
        return [], [f"{train} and {folder / 'test'} hold different classes", "only in train: bar2"]
    if how == "no class folders":
        for image in train.rglob("*.png"):
            image.rename(train / f"{image.parent.name}-{image.name}")
        for sub in [p for p in train.iterdir() if p.is_dir()]:
            sub.rmdir()
        return [], [f"{train} holds no class folders", f"{train}/<class>/"]
    if how == "no train folder":
        (folder / "train").rename(folder / "bar-images")
        return [], [f"{folder} has no train/ folder", f"{folder}/train/<class>/<image>"]
    raise AssertionError(how)


CASES = [
    "unreadable",
    "truncated",
    "blank",
    "empty class",
    "missing class",
    "different classes",
    "no class folders",
    "no train folder",
]


@pytest.mark.parametrize("how", CASES)
def test_bad_folder(how: str, tmp_path: Path, capsys) -> None:
    folder, cache = write_image_folder(tmp_path / "imgs"), tmp_path / "cache"
    extra, expected = damage(folder, how)
    before = snapshot(folder)
    args = folder_args(folder, tmp_path / "runs", "x", cache)
    message = fails(capsys, "fit", "--config=configs/pretrain.yaml", *args, *extra)
    assert message.startswith("lit_transfer: error: ")
    for part in expected:
        assert part in message, message
    assert snapshot(folder) == before and not list(cache.glob("*")) and nothing_written(tmp_path)


def test_missing_folder(tmp_path: Path, capsys) -> None:
    args = folder_args(tmp_path / "nope", tmp_path / "runs", "x", tmp_path / "c")
    # --ckpt_path null: no stage one here, whose missing checkpoint the config's ckpt_path would name first
    message = fails(capsys, "fit", "--config=configs/folder_finetune.yaml", *args, "--ckpt_path=null")
    assert f"image folder {tmp_path / 'nope'} does not exist" in message and nothing_written(tmp_path)


@pytest.mark.parametrize(("kind", "expected"), [("folder", "holds no images"), ("glob", "matches no file")])
def test_predict_path_without_images(kind: str, expected: str, tmp_path: Path, capsys, folder_stage) -> None:
    empty = tmp_path / "scans"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    (empty / ".hidden.png").write_bytes(b"hidden files are not images")
    target = empty if kind == "folder" else empty / "*.jpg"
    args = [f"--trainer.default_root_dir={tmp_path / 'runs'}", f"--ckpt_path={folder_stage['checkpoint']}"]
    message = fails(capsys, "predict", "--config=configs/folder_finetune.yaml", *args, f"--data.predict_path={target}")
    assert str(target) in message and expected in message
    assert nothing_written(tmp_path)
