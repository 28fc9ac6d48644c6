"""The transfer study end to end on tiny synthetic IDX files: the report's contents, resume, bad input."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
import statistics
import sys
from pathlib import Path

import process_guard
import pytest
import torch
from helpers import REPO, write_mnist
from matplotlib.image import imread

from lit_transfer.study.plan import Run
from lit_transfer.study.progress import estimate_s
from lit_transfer.study.report import versus
from lit_transfer.study.runner import build_parser, main
from lit_transfer.study.stats import Stat

DIRECTIONS = ["5-9 -> 0-4", "0-4 -> 5-9", "MNIST -> Fashion-MNIST", "Fashion-MNIST -> MNIST"]
PLOTS = ["accuracy_vs_labels.png", "accuracy_vs_epoch.png", "accuracy_vs_depth.png", "confusion.png"]
CONDITIONS = ["transfer_frozen", "transfer_finetune", "scratch", "random_frozen"]


def study_args(data: Path, out: Path, *extra: str) -> list[str]:
    # batch 16: the synthetic set has ~11 training images per digit
    return ["--data_dir", str(data), "--download", "false", "--out", str(out), "--batch_size", "16", *extra]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The ``--quick`` study, run once for the tests of its report: (data_dir, report folder, console output)."""
    tmp = tmp_path_factory.mktemp("study")
    data, out = write_mnist(tmp / "data"), tmp / "report"
    write_mnist(data, folder="FashionMNIST")  # the cross-dataset directions' other dataset (synthetic too)
    console = io.StringIO()  # capsys is function-scoped
    with contextlib.redirect_stdout(console):
        main(["--config", str(REPO / "configs/study.yaml"), "--quick", *study_args(data, out)])
    return data, out, console.getvalue()


def read_csv(out: Path) -> list[dict]:
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def mean_pct(rows: list[dict], **key: str) -> str:
    values = [float(r["test_acc"]) for r in rows if all(r[k] == v for k, v in key.items())]
    assert values, key
    return f"{100 * statistics.fmean(values):.2f}"


def test_csv_has_one_row_per_run(quick: tuple[Path, Path, str]) -> None:
    _, out, console = quick
    rows = read_csv(out)
    # per direction: 1 source run + 2 budgets x 4 conditions + 3 freezing depths; 1 seed with --quick
    assert len(rows) == 4 * (1 + 2 * 4 + 3)
    assert {r["direction"] for r in rows} == set(DIRECTIONS)
    for direction in DIRECTIONS:
        mine = [r for r in rows if r["direction"] == direction]
        assert sorted((r["condition"], r["labels_per_class"]) for r in mine if r["condition"] in CONDITIONS) == sorted(
            (c, b) for c in CONDITIONS for b in ("3", "100")
        )
        assert sorted(r["depth"] for r in mine if r["condition"] == "transfer_depth") == ["1", "2", "3"]
    for r in rows:
        assert 0 <= float(r["test_acc"]) <= 1
        assert float(r["train_time_s"]) > 0 and r["epochs"] == "1"
        assert (out / r["run_dir"] / "results.json").is_file()
    # across datasets every class of both: MNIST's 10 digits, then Fashion-MNIST's 10 classes (and back)
    across = [r for r in rows if r["direction"] == "MNIST -> Fashion-MNIST"]
    assert {r["digits"] for r in across} == {"0 1 2 3 4 5 6 7 8 9"}
    source = next(r for r in across if r["condition"] == "pretrain")
    assert json.loads((out / source["run_dir"] / "results.json").read_text())["dataset"] == "mnist"
    frozen = next(r for r in across if r["condition"] == "transfer_frozen")
    assert json.loads((out / frozen["run_dir"] / "results.json").read_text())["dataset"] == "fashion_mnist"
    assert "[48/48]" in console and "left" in console  # progress with runs left and time left


def test_report_table_lists_every_condition_with_mean_and_std(quick: tuple[Path, Path, str]) -> None:
    _, out, _ = quick
    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ") and "→" in line]
    assert len(table) == 48  # one group per run with a single seed
    for line in table:
        assert re.search(r"\| [\d,]+ \| \d+\.\d\d ± (n/a|\d+\.\d\d) \| 1 \| \d+\.\d \|$", line), line
    for name in ("backbone frozen", "fine-tuned", "from scratch", "random backbone", "n=1", "n=2", "n=3", "source"):
        assert sum(name in line for line in table) >= 2, name  # in both directions
    rows = read_csv(out)
    scratch = mean_pct(rows, direction="5-9 -> 0-4", condition="scratch", labels_per_class="3")
    assert f"| 5-9 → 0-4 | from scratch | 3 | 1 | {scratch} ± n/a |" in report  # 15 images: 1 batch of 16


def test_answer_numbers_come_from_the_csv(quick: tuple[Path, Path, str]) -> None:
    _, out, _ = quick
    report = (out / "report.md").read_text()
    answer = report.split("## Answer")[1].split("##")[0].strip()
    rows = read_csv(out)
    headline = mean_pct(rows, direction="5-9 -> 0-4", condition="transfer_frozen", labels_per_class="100")
    assert answer.startswith("Features learned on digits 5-9")
    assert re.findall(r"(\d+\.\d\d)%", answer)[0] == headline  # the notebook's transfer comes first
    # Every percentage, in the order the sentences give them, is the mean of its own group in results.csv.
    forward, reverse = "5-9 -> 0-4", "0-4 -> 5-9"
    expected = [
        (forward, "transfer_frozen", "100"),  # the notebook's transfer at the main budget
        (forward, "scratch", "100"),
        (forward, "random_frozen", "100"),
        (forward, "transfer_frozen", "3"),  # with only 3 labels per class
        (forward, "scratch", "3"),
        (forward, "transfer_finetune", "100"),
        (reverse, "transfer_frozen", "100"),
        (reverse, "scratch", "100"),
    ]
    for across in ("MNIST -> Fashion-MNIST", "Fashion-MNIST -> MNIST"):  # where transfer stops paying
        expected += [(across, c, b) for b in ("100", "3") for c in ("transfer_frozen", "scratch")]
    numbers = re.findall(r"(\d+\.\d\d)%", answer)
    wanted = [mean_pct(rows, direction=d, condition=c, labels_per_class=b) for d, c, b in expected]
    assert numbers == wanted, answer


def test_plots_are_real_pngs(quick: tuple[Path, Path, str]) -> None:
    _, out, _ = quick
    report = (out / "report.md").read_text()
    for name in PLOTS:
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000, name
        height, width, _ = imread(path).shape
        assert width > 500 and height > 300
        assert f"]({name})" in report


def test_rerun_repeats_only_the_missing_run(quick: tuple[Path, Path, str], tmp_path: Path, capsys) -> None:
    data, out, _ = quick
    copy = shutil.copytree(out, tmp_path / "report")
    missing = copy / "runs/59to04/scratch/labels3/seed0"
    (next(missing.glob("version_*")) / "results.json").unlink()
    done = {p: p.stat().st_mtime_ns for p in copy.glob("runs/**/done.json") if p.parent != missing}
    main(["--config", str(REPO / "configs/study.yaml"), "--quick", *study_args(data, copy)])
    console = capsys.readouterr().out
    assert "47 already done, 1 to go" in console
    assert console.count("[") == 1 and "[4/48] runs/59to04/scratch/labels3/seed0" in console
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # the others were not run again
    assert len(read_csv(copy)) == 48


def test_seed_preset_runs_only_the_notebook_stages(tmp_path: Path) -> None:
    data = write_mnist(tmp_path / "data")
    main(study_args(data, tmp_path / "out", "--preset", "seed", "--seeds", "2", "--epochs", "1"))
    rows = read_csv(tmp_path / "out")
    assert sorted(r["condition"] for r in rows) == ["pretrain"] * 4 + ["transfer_frozen"] * 4
    assert (tmp_path / "out/confusion.png").stat().st_size > 0  # summed over both seeds
    report = (tmp_path / "out/report.md").read_text()
    assert "not drawn" in report and "no scratch or random-feature control" in report


def test_one_direction_is_the_notebook_in_one_process(tmp_path: Path, monkeypatch, capsys) -> None:
    data = write_mnist(tmp_path / "data")
    monkeypatch.chdir(tmp_path)  # no --out: the subset's own default folder, beside (not inside) reports/study
    args = ["--preset", "seed", "--seeds", "[0]", "--directions", "[59to04]", "--epochs", "1"]
    main(["--data_dir", str(data), "--download", "false", "--batch_size", "16", *args])
    out = tmp_path / "reports/study-seed-59to04"
    rows = read_csv(out)
    assert [(r["direction"], r["condition"]) for r in rows] == [
        ("5-9 -> 0-4", "pretrain"),
        ("5-9 -> 0-4", "transfer_frozen"),
    ]
    assert not (out / "runs/04to59").exists() and not (tmp_path / "reports/study").exists()
    done = json.loads((out / "runs/59to04/transfer_frozen/labelsall/seed0/done.json").read_text())
    assert "--trainer.devices=1" in done["args"]  # one device whatever the machine has (see cli_args)
    console = capsys.readouterr().out
    assert console.count("test accuracy") == 2  # both stages' results, printed by the one command
    report = (out / "report.md").read_text()
    assert "reverse direction" not in report and "no scratch or random-feature control" in report


def bn_stats(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if ".bn" in k and "running" in k}


def test_batch_norm_preset_keeps_or_lets_the_frozen_statistics_drift(tmp_path: Path) -> None:
    """The batch_norm preset: kept statistics bit-identical to the source run's, drifting ones moved, the answer
    from the csv."""
    data, out = write_mnist(tmp_path / "data"), tmp_path / "out"
    args = ["--preset", "batch_norm", "--seeds", "[0]", "--directions", "[59to04]", "--epochs", "2"]
    main(study_args(data, out, *args, "--label_budgets", "[3]", "--keep_checkpoints", "true"))
    rows = read_csv(out)
    assert [r["condition"] for r in rows] == ["pretrain", "transfer_frozen", "transfer_frozen_bn_drift", "scratch"]
    assert all(r["batch_norm"] == "True" for r in rows)
    runs = out / "runs/59to04"
    source = bn_stats(next((runs / "pretrain").rglob("last.ckpt")))
    kept = bn_stats(next((runs / "transfer_frozen").rglob("last.ckpt")))
    drift = bn_stats(next((runs / "transfer_frozen_bn_drift").rglob("last.ckpt")))
    assert len(source) == 4 and source.keys() == kept.keys() == drift.keys()  # bn1, bn2: mean and variance
    assert all(torch.equal(source[k], kept[k]) for k in source)
    assert not any(torch.equal(source[k], drift[k]) for k in source)
    report = (out / "report.md").read_text()
    kept_pct = mean_pct(rows, condition="transfer_frozen")
    drift_pct = mean_pct(rows, condition="transfer_frozen_bn_drift")
    assert f"{kept_pct}% kept, {drift_pct}% drifting" in report and "BatchNorm after each convolution" in report
    assert "Drifting co" in report


def test_std_and_gap_with_several_seeds() -> None:
    a, b = Stat([0.90, 0.80]), Stat([0.50, 0.52])
    assert a.cell() == "85.00 ± 7.07"
    assert versus(a, b) == "+34.00 points, beyond the seed-to-seed spread"
    assert versus(Stat([0.80, 0.90]), Stat([0.84, 0.86])) == "+0.00 points, within the seed-to-seed spread"


def test_config_matches_the_signature() -> None:
    config = build_parser().parse_args(["--config", str(REPO / "configs/study.yaml")])
    assert config.seeds == 3 and config.label_budgets == [1, 3, 5, 10, 100, 1000, None] and config.quick is False
    assert config.directions == ["59to04", "04to59", "mnist_to_fashion", "fashion_to_mnist"]


@pytest.mark.parametrize(
    "bad",
    [
        ["--preset", "bogus"],
        ["--seeds", "[]"],
        ["--seeds", "0"],
        ["--directions", "[]"],
        ["--directions", "[5to0]"],
        ["--extra_args", '["--trainer.devices=2"]'],
        ["--extra_args", '["--trainer.strategy", "ddp"]'],
        ["--extra_args", '["--trainer.strategy.class_path=DDPStrategy"]'],
        ["--executor", "dask"],
        ["--threads_per_run", "0"],
        ["--runs_per_gpu", "-1"],
        ["--ray_address", "10.0.0.1:6379"],  # without --executor ray
    ],
)
def test_bad_input_is_a_one_line_error(bad: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*bad, "--out", str(tmp_path / "out")])
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("lit_transfer.study: error:") and "\n" not in message
    assert bad[0][2:] in message


def test_ray_executor_without_ray_says_how_to_install_it(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["--executor", "ray", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == (
        'lit_transfer.study: error: --executor ray needs Ray: pip install -e ".[ray]" (or leave --executor sequential)'
    )
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_preset_from_the_shell(tmp_path: Path) -> None:
    result = process_guard.run(
        [sys.executable, "-m", "lit_transfer.study", "--preset", "bogus", "--out", str(tmp_path)],
        timeout=120,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "preset" in result.stderr, result.stderr


def test_time_estimate_weighs_what_trains() -> None:
    # After one measured source run (88 s, as on the 2-core CPU), runs whose backbone stays frozen (cached features)
    # are estimated far cheaper than those that train it; the study's measured walls were 29 s vs 88-92 s.
    source = Run("59to04", "pretrain", 0)
    walls = {source: 88.0}
    estimate = {
        name: estimate_s(Run("59to04", condition, 0, depth=depth), walls, epochs=5, warmup=1)
        for name, condition, depth in [
            ("frozen", "transfer_frozen", 2),
            ("depth2", "transfer_depth", 2),
            ("depth1", "transfer_depth", 1),
            ("finetune", "transfer_finetune", 2),
            ("scratch", "scratch", None),
        ]
    }
    assert estimate["scratch"] == pytest.approx(88.0)
    assert estimate["frozen"] == estimate["depth2"] < 0.4 * estimate["scratch"]
    assert estimate["frozen"] < estimate["depth1"] < estimate["scratch"]
    assert estimate["frozen"] < estimate["finetune"] < estimate["scratch"]
    assert estimate_s(Run("59to04", "scratch", 1), walls | {Run("59to04", "scratch", 0): 91.5}, 5, 1) == 91.5
