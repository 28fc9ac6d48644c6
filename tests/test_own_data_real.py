"""Your own data on the real MNIST (found through LIT_TRANSFER_MNIST_ROOT): a PNG folder written from the IDX files
trains exactly as the IDX files; scans of test digits are predicted about as well as the digits themselves; the
exported models (torch.export, ONNX, safetensors, TorchScript) agree with PyTorch on the whole test split, and,
loaded in a fresh process, with ``predict``."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
import torch
from helpers import REAL_MNIST, only_run, results, run_cli
from PIL import Image, ImageOps
from test_export import FORMATS, classes_in_a_fresh_process, printed_snippet
from test_folder import write_from_idx
from test_real_mnist import real_args
from torchvision.datasets import MNIST

from lit_transfer.data import DigitsDataModule
from lit_transfer.data.folders import FolderDataModule
from lit_transfer.export import main as export
from lit_transfer.module import TransferModule

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(
        not REAL_MNIST, reason="set LIT_TRANSFER_MNIST_ROOT to the folder that holds MNIST/raw/ (e.g. ../shared/data)"
    ),
]


@pytest.fixture(scope="module")
def stage_two(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The notebook's two stages, one epoch each (stage one on 100 batches), on the real MNIST: stage two's results."""
    runs = tmp_path_factory.mktemp("real_stages")
    run_cli("fit", "--config=configs/pretrain.yaml", *real_args(runs, "pretrain"), "--trainer.limit_train_batches=100")
    source = results(only_run(runs / "pretrain"))["checkpoint"]
    run_cli("fit", "--config=configs/finetune.yaml", *real_args(runs, "finetune"), f"--ckpt_path={source}")
    return results(only_run(runs / "finetune"))


def test_png_folder_from_real_idx_files_trains_exactly_as_the_idx_files(tmp_path: Path) -> None:
    folder, cache, runs = tmp_path / "png", tmp_path / "cache", tmp_path / "runs"
    write_from_idx(Path(REAL_MNIST), folder, [4, 9])  # two digits that are confused now and then
    idx = DigitsDataModule(data_dir=REAL_MNIST, digits=[4, 9], download=False)
    own = FolderDataModule(data_dir=str(folder), classes=[4, 9], cache_dir=str(cache))
    for split in ("train", "test"):
        (a, la, _), (b, lb, _) = idx.read(split), own.read(split)
        assert torch.equal(a, b) and torch.equal(la, lb), split
    tiny = ["--trainer.limit_train_batches=40"]  # of 83: the same training either way is the point
    run_cli("fit", "--config=configs/pretrain.yaml", *real_args(runs, "idx"), *tiny, "--data.digits=[4,9]")
    own = [f"--data.data_dir={folder}", "--data=FolderDataModule", f"--data.cache_dir={cache}", "--data.classes=[4,9]"]
    run_cli("fit", "--config=configs/pretrain.yaml", *real_args(runs, "png"), *tiny, *own)
    first, second = results(only_run(runs / "idx")), results(only_run(runs / "png"))
    assert first["test_images"] == second["test_images"] == 1991  # every test 4 and 9
    assert first["test_acc"] == second["test_acc"] and 0.97 < first["test_acc"] < 1


def make_scans(root: Path, per_digit: int = 80) -> None:
    """Test digits 0-4 as a person's scans: dark on light, enlarged 3-8x, off-centre with margins; PNG and JPEG,
    grey and RGB (ink and paper colours). Named ``<index>_<digit>.<ext>``."""
    data = MNIST(REAL_MNIST, train=False, download=False)
    rng = random.Random(0)
    root.mkdir()
    for digit in range(5):
        for k, index in enumerate((data.targets == digit).nonzero().squeeze(1)[:per_digit].tolist()):
            size = round(28 * rng.uniform(3, 8))
            ink = ImageOps.invert(Image.fromarray(data.data[index].numpy()))
            ink = ink.resize((size, size), Image.Resampling.LANCZOS)
            width, height = size + rng.randint(20, 300), size + rng.randint(20, 300)
            page = Image.new("L", (width, height), 255)
            page.paste(ink, (rng.randint(0, width - size), rng.randint(0, height - size)))
            if k % 2:  # blue ink on cream paper
                page = ImageOps.colorize(page, black=(20, 30, 110), white=(250, 244, 230))
            if k % 4 < 2:
                page.save(root / f"{index:05d}_{digit}.png")
            else:
                page.save(root / f"{index:05d}_{digit}.jpg", quality=85)


def test_scans_of_test_digits_are_predicted_about_as_well_as_the_digits(stage_two: dict, tmp_path: Path) -> None:
    scans, runs = tmp_path / "scans", tmp_path / "runs"
    make_scans(scans)
    run_cli(
        "predict",
        "--config=configs/finetune.yaml",
        f"--ckpt_path={stage_two['checkpoint']}",
        f"--data.predict_path={scans}",
        f"--trainer.default_root_dir={runs}",
        "--trainer.enable_progress_bar=false",
    )
    with open(only_run(runs / "predict") / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 400 and not any(r["error"] for r in rows)
    accuracy = sum(r["predicted"] == Path(r["file"]).stem.split("_")[1] for r in rows) / len(rows)
    print(f"scans: {100 * accuracy:.2f}%, IDX test split: {100 * stage_two['test_acc']:.2f}%")
    assert abs(accuracy - stage_two["test_acc"]) <= 0.02


def test_exported_models_agree_with_pytorch_on_the_whole_test_split(stage_two: dict, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra (pip install '.[export]')")
    checkpoint = stage_two["checkpoint"]
    data = DigitsDataModule(data_dir=REAL_MNIST, digits=[0, 1, 2, 3, 4], download=False)
    images, _, positions = data.read("test")
    assert len(images) == 5139
    model = TransferModule(num_classes=5)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    with torch.no_grad():
        expected = model.eval()(images).softmax(1)
    # predict's classes for the same images, in the same order (the CSV names each by its index in the test file)
    runs = tmp_path / "runs"
    run_cli("predict", "--config=configs/finetune.yaml", *real_args(runs, "p"), f"--ckpt_path={checkpoint}")
    with open(only_run(runs / "p" / "predict") / "predictions.csv", newline="") as f:
        by_index = {int(row["test_index"]): row["predicted"] for row in csv.DictReader(f)}
    predicted = [by_index[i] for i in positions.tolist()]
    x = images.unsqueeze(1).float() / 255
    for fmt in FORMATS:
        capsys.readouterr()
        export(["--ckpt_path", checkpoint, "--format", fmt, "--output", str(tmp_path / f"m.{fmt}")])
        snippet = printed_snippet(capsys.readouterr().out)
        scope = {"images": x.numpy() if fmt == "onnx" else x}
        with torch.no_grad():
            exec(snippet, scope)
        probabilities = torch.as_tensor(scope["probabilities"])
        same = (probabilities.argmax(1) == expected.argmax(1)).float().mean().item()
        diff = (probabilities - expected).abs().max().item()
        classes = classes_in_a_fresh_process(snippet, x.numpy(), tmp_path, lit_transfer=fmt == "safetensors")
        as_predict = sum(a == b for a, b in zip(classes, predicted, strict=True)) / len(predicted)
        with capsys.disabled():
            print(
                f"{fmt}: same class as PyTorch for {100 * same:.3f}% of 5139 test images, largest difference "
                f"{diff:.2e}; in a fresh process, same class as predict for {100 * as_predict:.3f}%"
            )
        assert same >= 0.999 and diff <= 1e-4 and as_predict >= 0.999, fmt
