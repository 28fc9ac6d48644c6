"""``predict --data.predict_path`` (a file, a folder, a glob) through the real CLI: predictions.csv with the real class
names from the checkpoint, the top three, unreadable files as rows; a folder's test split keeps its own CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from helpers import make_digits, only_run, run_cli
from PIL import Image, ImageOps

from lit_transfer.images.rule import load_mnist
from lit_transfer.module import TransferModule

NAMES = ["bar0", "bar1", "bar2"]


def make_files(root: Path) -> None:
    """Images of the folder's classes in the formats and modes people have, plus files that are no images."""
    images, labels = make_digits(2, seed=5)
    bar = {label: Image.fromarray(image.numpy()) for image, label in zip(images, labels.tolist(), strict=True)}
    (root / "a").mkdir(parents=True)
    bar[1].save(root / "a" / "mnist_like.png")  # 28x28 grey: used as it is
    paper = ImageOps.invert(bar[2]).resize((84, 84), Image.Resampling.LANCZOS)  # dark on light, 3x
    scan = Image.new("L", (150, 110), 255)
    scan.paste(paper, (50, 10))  # off-centre, with margins
    (root / "b").mkdir()
    scan.convert("RGB").save(root / "b" / "scan.jpg", quality=92)
    scan.convert("P").save(root / "b" / "scan.gif")
    scan.save(root / "b" / "scan.bmp")
    drawing = Image.new("RGBA", (90, 90), (0, 0, 0, 0))  # ink on a transparent background (counts as paper)
    drawing.paste(Image.new("RGBA", (84, 84), (20, 20, 20, 255)), (3, 3), mask=bar[0].resize((84, 84)))
    drawing.save(root / "b" / "drawing.png")
    (root / "c").mkdir()
    (root / "c" / "broken.png").write_bytes(b"\x89PNG but not really")
    (root / "c" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    bar[0].save(root / ".hidden" / "skipped.png")


def predict(
    tmp_path: Path, checkpoint: Path, target: str, *extra: str, config: str = "folder_finetune"
) -> list[dict[str, str]]:
    runs = tmp_path / "runs"
    # By default the checkpoint's own stage config and no data folder: the classes come from the checkpoint.
    run_cli(
        "predict",
        f"--config=configs/{config}.yaml",
        f"--ckpt_path={checkpoint}",
        f"--data.predict_path={target}",
        f"--trainer.default_root_dir={runs}",
        "--trainer.enable_progress_bar=false",
        *extra,
    )
    with open(only_run(runs / "predict") / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def by_hand(checkpoint: Path, files: list[str]) -> torch.Tensor:
    model = TransferModule(num_classes=3)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    with torch.no_grad():
        return model.eval()(torch.stack([load_mnist(f) for f in files])).softmax(1)


def test_predict_a_folder_of_image_files(tmp_path: Path, folder_stage: dict, capsys) -> None:
    scans = tmp_path / "scans"
    make_files(scans)
    rows = predict(tmp_path, folder_stage["checkpoint"], str(scans))
    expected = ["a/mnist_like.png", "b/drawing.png", "b/scan.bmp", "b/scan.gif", "b/scan.jpg", "c/broken.png"]
    assert [r["file"] for r in rows] == [str(scans / f) for f in expected]  # recursive, images only, no hidden
    readable = [r for r in rows if not r["error"]]
    probabilities = by_hand(folder_stage["checkpoint"], [r["file"] for r in readable])
    top, order = probabilities.topk(3, dim=1)
    for row, p, k in zip(readable, top.tolist(), order.tolist(), strict=True):
        assert [row["predicted"], row["second"], row["third"]] == [NAMES[i] for i in k]
        got = [float(row[c]) for c in ("probability", "second_probability", "third_probability")]
        assert got == pytest.approx(p, abs=1e-6)
    (broken,) = [r for r in rows if r["error"]]
    assert broken["file"].endswith("broken.png") and "not a readable image" in broken["error"]
    assert broken["predicted"] == "" and broken["probability"] == ""
    printed = capsys.readouterr().out
    assert "predicted 5 files, 1 unreadable" in printed and f"unreadable: {scans / 'c' / 'broken.png'}: " in printed
    lines = printed.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("file ")) :]
    assert table[0].split() == ["file", "predicted", "probability", "top", "3"] and len(table) >= 7
    first = table[1].split()  # a long path is shortened to its end
    assert first[0].endswith("/scans/a/mnist_like.png") and first[1] == readable[0]["predicted"]


@pytest.mark.hparams_outside_cli  # evaluation.prepare() rebuilds the module from its hyperparameters, in Python
def test_predict_files_with_a_config_of_other_classes_uses_the_checkpoints_head(
    tmp_path: Path, folder_stage: dict, said: list[str]
) -> None:
    # configs/pretrain.yaml names five digits; the checkpoint's head has three classes. Files need no dataset, so
    # the network takes the checkpoint's width and its class names, and the first line says so.
    scans = tmp_path / "scans"
    make_files(scans)
    rows = predict(tmp_path, folder_stage["checkpoint"], str(scans / "b"), config="pretrain")
    assert [Path(r["file"]).name for r in rows] == ["drawing.png", "scan.bmp", "scan.gif", "scan.jpg"]
    probabilities = by_hand(folder_stage["checkpoint"], [r["file"] for r in rows])
    assert [r["predicted"] for r in rows] == [NAMES[i] for i in probabilities.argmax(1).tolist()]
    assert [float(r["probability"]) for r in rows] == pytest.approx(probabilities.max(1).values.tolist(), abs=1e-6)
    assert said == [
        "lit_transfer: predict with the checkpoint's classes bar0, bar1, bar2 (folder); the config's are not used"
    ]


def test_predict_one_file_and_a_glob(tmp_path: Path, folder_stage: dict) -> None:
    scans = tmp_path / "scans"
    make_files(scans)
    (one,) = predict(tmp_path / "one", folder_stage["checkpoint"], str(scans / "b" / "scan.jpg"))
    assert one["file"] == str(scans / "b" / "scan.jpg") and one["predicted"] in NAMES and not one["error"]
    rows = predict(tmp_path / "glob", folder_stage["checkpoint"], str(scans / "**" / "*.png"))
    assert [Path(r["file"]).name for r in rows] == ["mnist_like.png", "drawing.png", "broken.png"]


def test_rgb_and_palette_scans_of_one_image_agree(tmp_path: Path, folder_stage: dict) -> None:
    # The same scan as BMP (grey), GIF (palette) and RGB JPEG: the rule gives nearly the same input.
    scans = tmp_path / "scans"
    make_files(scans)
    bmp, gif, jpg = (load_mnist(scans / "b" / f"scan.{ext}").float() for ext in ("bmp", "gif", "jpg"))
    assert bmp.sum() > 0 and (bmp - gif).abs().mean() < 3 and (bmp - jpg).abs().mean() < 3


def test_predict_a_folders_test_split_names_files_and_classes(tmp_path: Path, folder_stage: dict) -> None:
    folder = folder_stage["folder"]
    args = [f"--data.data_dir={folder}", f"--data.cache_dir={tmp_path / 'cache'}"]
    runs = tmp_path / "runs"
    run_cli(
        "predict",
        "--config=configs/folder_finetune.yaml",
        *args,
        f"--ckpt_path={folder_stage['checkpoint']}",
        f"--trainer.default_root_dir={runs}",
    )
    with open(only_run(runs / "predict") / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and all(Path(r["file"]).parent.name == r["class"] for r in rows)
    correct = sum(r["class"] == r["predicted"] for r in rows) / len(rows)
    assert correct == pytest.approx(folder_stage["results"]["test_acc"])
