"""The note on bf16-mixed follows a probe measured on the machine (stubbed here: no timing in tests), cached per
machine, and never calls bf16 faster where it measured slower."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lit_transfer.command_line.precision import bf16_note, bf16_speedup, cpu_model, measure_bf16_speedup

ZEN4 = "model name\t: AMD EPYC 9R14 96-Core Processor\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
XEON = "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_fp16\n"


class Trainer:
    """What the note reads of a Trainer: its precision and device."""

    def __init__(self, precision: str, device: str = "cpu") -> None:
        self.precision = precision
        self.strategy = type("Strategy", (), {"root_device": torch.device(device)})()


def test_faster_is_said_with_the_measured_ratio_and_only_when_measured() -> None:
    note = bf16_note(Trainer("32-true"), speedup=lambda: 1.43)
    assert "1.4x faster" in note and "--trainer.precision bf16-mixed" in note and "measured on this CPU" in note
    assert "docs/results.md" in note  # the accuracy that goes with it
    assert bf16_note(Trainer("bf16-mixed"), speedup=lambda: 1.43) is None  # already the faster one


@pytest.mark.parametrize("ratio", [0.7, 1.0, 1.1])
def test_a_32_bit_run_hears_nothing_where_bf16_is_not_clearly_faster(ratio: float) -> None:
    assert bf16_note(Trainer("32-true"), speedup=lambda: ratio) is None


def test_a_bf16_run_is_told_when_it_measured_slower_or_equal() -> None:
    slower = bf16_note(Trainer("bf16-mixed"), speedup=lambda: 1 / 1.4)
    assert "1.4x slower" in slower and "faster than 32-bit" not in slower
    equal = bf16_note(Trainer("bf16-mixed"), speedup=lambda: 1.02)
    assert "about as fast" in equal and "faster than" not in equal


def test_no_probe_off_the_cpu_or_for_other_precisions() -> None:
    def never() -> float:
        raise AssertionError("probed")

    assert bf16_note(Trainer("32-true", "meta"), speedup=never) is None
    assert bf16_note(Trainer("16-mixed"), speedup=never) is None


def test_the_probe_runs_once_per_machine_and_torch(tmp_path: Path) -> None:
    calls = []

    def measure() -> float:
        calls.append(1)
        return 1.43 if len(calls) == 1 else 0.7

    assert bf16_speedup(tmp_path, measure, ZEN4) == 1.43
    assert bf16_speedup(tmp_path, measure, ZEN4) == 1.43 and len(calls) == 1  # from the cache
    assert bf16_speedup(tmp_path, measure, XEON) == 0.7 and len(calls) == 2  # another CPU: its own entry
    cached = json.loads((tmp_path / "bf16-speedup.json").read_text())
    assert cached == {
        f"AMD EPYC 9R14 96-Core Processor | torch {torch.__version__}": 1.43,
        f"Intel(R) Xeon(R) Processor | torch {torch.__version__}": 0.7,
    }


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"x": 1}', "KEY_TRUE", "KEY_NEGATIVE"])
def test_a_broken_cache_is_measured_again_and_replaced(content: str, tmp_path: Path) -> None:
    key = json.dumps(f"{cpu_model(ZEN4)} | torch {torch.__version__}")
    content = {"KEY_TRUE": f"{{{key}: true}}", "KEY_NEGATIVE": f"{{{key}: -2}}"}.get(content, content)
    (tmp_path / "bf16-speedup.json").write_text(content)
    assert bf16_speedup(tmp_path, lambda: 1.25, ZEN4) == 1.25
    assert bf16_speedup(tmp_path, lambda: 9.0, ZEN4) == 1.25  # the replaced cache is read next time


def test_an_unwritable_cache_still_gives_the_measurement(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache folder should be
    assert bf16_speedup(blocked / "lit_transfer", lambda: 1.3, ZEN4) == 1.3


def test_the_real_probe_gives_a_ratio_and_leaves_the_random_state_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    ratio = measure_bf16_speedup()
    assert math.isfinite(ratio) and ratio > 0  # its value depends on the machine: not asserted
    assert torch.equal(torch.get_rng_state(), before)  # training's dropout draws from it next


def test_cpu_model_is_read_from_cpuinfo() -> None:
    assert cpu_model(ZEN4) == "AMD EPYC 9R14 96-Core Processor"
    assert cpu_model("flags : avx2\n")  # no model name: the platform's name, never empty
