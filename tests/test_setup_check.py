"""``python -m lit_transfer --version`` and the install check: a torchvision built for another torch is caught
before any command starts, in one line with the pip command that fixes it. The mismatch is injected (a stand-in
torchvision 0.28.0 that fails to import as a mismatched one does, ahead of the real one on PYTHONPATH), never by
breaking the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import REPO

from lit_transfer.command_line import setup_check

NMS_ERROR = "operator torchvision::nms does not exist"  # what import torchvision raises with another torch


def lit_transfer(*args: str, cwd: Path, shadow: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m lit_transfer <args>`` in a new process, with ``shadow`` first on PYTHONPATH."""
    path = os.pathsep.join(str(p) for p in (shadow, REPO) if p)
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def mismatched_torchvision(tmp_path: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes torchvision 0.28.0 (metadata included) whose import fails as a
    torchvision built for another torch does."""
    shadow = tmp_path / "shadow"
    (shadow / "torchvision").mkdir(parents=True)
    (shadow / "torchvision" / "__init__.py").write_text(f"raise RuntimeError({NMS_ERROR!r})\n")
    (shadow / "torchvision-0.28.0.dist-info").mkdir()
    (shadow / "torchvision-0.28.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchvision\nVersion: 0.28.0\n"
    )
    return shadow


def test_version_prints_the_versions_and_devices(tmp_path: Path) -> None:
    done = lit_transfer("lit_transfer", "--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    fields = {line.split()[0]: line.split(maxsplit=1)[1] for line in lines}
    assert fields["torch"] == torch.__version__ and fields["torchvision"] == torchvision.__version__
    assert fields["lit_transfer"].endswith(f"({REPO / 'lit_transfer'})")
    assert fields["lit_transfer"] and fields["lightning"] and fields["Python"].startswith(f"{sys.version_info[0]}.")
    assert any(line.startswith("device       cpu: ") for line in lines), lines


def test_the_message_names_the_pair_and_the_pip_command() -> None:
    message = setup_check.mismatch_message("2.14.1+cpu", "0.28.0", RuntimeError(NMS_ERROR))
    assert message == (
        f"torchvision 0.28.0 does not match torch 2.14.1+cpu ({NMS_ERROR}): pip install 'torchvision==0.29.*' "
        "--index-url https://download.pytorch.org/whl/cpu (the release for this torch; pairs: "
        "https://github.com/pytorch/vision#installation)"
    )
    assert "pip install 'torchvision==0.19.*' (" in setup_check.mismatch_message("2.4.0", "0.20.1", RuntimeError())


def test_an_injected_failure_is_caught_and_a_working_pair_passes() -> None:
    def broken() -> None:
        raise RuntimeError(NMS_ERROR)

    problem = setup_check.torchvision_problem(broken)
    assert problem is not None and "\n" not in problem and NMS_ERROR in problem and "pip install" in problem
    assert setup_check.torchvision_problem() is None  # this environment's own pair
    with pytest.raises(SystemExit) as exit_info:
        setup_check.exit_if_broken("lit_transfer", broken)
    assert exit_info.value.code == f"lit_transfer: error: {problem}"


def expected_error(prog: str) -> str:
    build = torch.__version__.partition("+")[2]
    index = f" --index-url https://download.pytorch.org/whl/{build}" if build else ""
    series = setup_check.matching_torchvision(torch.__version__)
    return (
        f"{prog}: error: torchvision 0.28.0 does not match torch {torch.__version__} ({NMS_ERROR}): "
        f"pip install 'torchvision=={series}.*'{index} (the release for this torch; pairs: "
        "https://github.com/pytorch/vision#installation)"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ("lit_transfer", "--version"),
        ("lit_transfer", "fit", "--config", str(REPO / "configs/pretrain.yaml"), "--trainer.default_root_dir=runs"),
        ("lit_transfer", "export", "--ckpt_path", "x.ckpt"),
        ("lit_transfer.study", "--help"),
    ],
)
def test_a_mismatched_torchvision_stops_every_command_in_one_line(
    command: tuple[str, ...], mismatched_torchvision: Path, tmp_path: Path
) -> None:
    done = lit_transfer(*command, cwd=tmp_path, shadow=mismatched_torchvision)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [expected_error(command[0])]
    if command[1] == "--version":  # the versions still print, to help
        assert "torchvision  0.28.0" in done.stdout and f"torch        {torch.__version__}" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shadow"]  # no run folder, nothing written
