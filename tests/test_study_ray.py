"""The study's runs as Ray tasks (``--executor ray``): the sequential study's numbers, runs on both nodes of a
cluster, a killed process retried and continued, a failing run reported while the rest complete; Ctrl-C or SIGTERM
and continue, with either executor; and the sequential study continuing a killed run from its own ``last.ckpt``.
Tiny synthetic data: each run is 1 epoch of 4 steps (54 images, batch 16) with ``last.ckpt`` every 2 steps,
deterministic."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, write_mnist
from process_guard import started

from lit_transfer.study.runner import main

pytestmark = pytest.mark.slow
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='needs Ray: pip install -e ".[ray]"')

NUMBERS = ["digits", "epochs", "test_acc", "test_loss", "train_images", "train_per_class"]
CHECKPOINTS = ["--trainer.deterministic=true", "--last_checkpoint.every_n_train_steps=2"]
BOTH = ["--preset", "seed", "--seeds", "1", "--epochs", "1"]  # 4 runs: a source and a transfer run per direction
ONE = [*BOTH, "--directions", "[59to04]"]
INTERRUPTED = "lit_transfer.study: interrupted: run the same command again to continue where it stopped"


def study(data: Path, out: Path, runs: list[str], *faults: str, executor: str = "sequential") -> list[str]:
    extra = json.dumps([*CHECKPOINTS, *faults])
    common = ["--data_dir", str(data), "--download", "false", "--batch_size", "16", "--out", str(out)]
    common += ["--threads_per_run", "1"]  # as many threads as Ray's default: the numbers depend on it
    return [*common, *runs, "--extra_args", extra, "--executor", executor]


def numbers(out: Path) -> dict[tuple, dict]:
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    key = ("direction", "condition", "labels_per_class", "depth")
    return {tuple(r[k] for k in key): {k: r[k] for k in NUMBERS} for r in rows}


def done(out: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(out)): json.loads(p.read_text()) for p in out.glob("runs/**/done.json")}


def shell(*args: str, **kwargs):
    """``python -m lit_transfer.study`` in a process group of its own, ended with everything in it on the way out
    (process_guard.started)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO / "tests"), "RAY_USAGE_STATS_ENABLED": "0"}
    return started([sys.executable, "-m", "lit_transfer.study", *args], cwd=REPO, env=env, text=True, **kwargs)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("study_ray") / "data")


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple, dict]:
    """The sequential study, uninterrupted: the numbers every other run of it must give."""
    out = tmp_path_factory.mktemp("reference")
    main(study(data, out, BOTH))
    return numbers(out)


@pytest.fixture(scope="module")
def cluster():
    """Two Ray "nodes" of 1 CPU each on this machine, joined by this process; its workers import tests/crash.py."""
    import ray
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as env:  # the nodes' processes inherit this environment
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")])))
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        nodes.add_node(num_cpus=1)
        ray.init(address=nodes.address, log_to_driver=False)
        yield nodes
        ray.shutdown()
        nodes.shutdown()


@pytest.fixture(scope="module")
def ray_study(cluster, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ray")
    main(study(data, out, BOTH, executor="ray"))
    return out


# Under Ray, SIGTERM to the study's process alone is left out (~1 min of CI): what it adds over the sequential
# case, the study stopping Ray's processes itself, Ctrl-C already needs, since Ray's processes block SIGINT.
@pytest.mark.parametrize(
    ("executor", "signum", "group"),
    [
        ("sequential", signal.SIGINT, True),
        ("sequential", signal.SIGTERM, False),
        ("sequential", signal.SIGTERM, True),
        pytest.param("ray", signal.SIGINT, True, marks=needs_ray),
        pytest.param("ray", signal.SIGTERM, True, marks=needs_ray),
    ],
    ids=["ctrl-c-sequential", "sigterm-sequential", "sigterm-group-sequential", "ctrl-c-ray", "sigterm-group-ray"],
)
def test_stopped_study_keeps_its_runs_and_the_same_command_continues(
    executor: str, signum: int, group: bool, data: Path, reference, tmp_path: Path
) -> None:
    # Ray: its own local Ray instance (no --ray_address), as from a terminal; first in this file, before the cluster.
    # Both directions under Ray: a source run is caught mid-way while the other direction's runs finish beside it.
    out, marker = tmp_path / "out", tmp_path / "caught"
    runs, total = (BOTH, 4) if executor == "ray" else (ONE, 2)
    match = [] if executor == "ray" else ["--trainer.callbacks.match=transfer"]  # sequential: after its source
    args = study(data, out, runs, "--trainer.callbacks+=crash.HangAt", "--trainer.callbacks.step=2",
                 f"--trainer.callbacks.once={marker}", *match, executor=executor)  # fmt: skip
    # Ctrl-C goes to the whole process group, as a terminal's reaches every process of its foreground command (Ray
    # blocks SIGINT in its own). SIGTERM goes to the study's process only (`kill PID`; Kubernetes signals a
    # container's main process): the study must stop Ray's processes itself; or to every process of the group at
    # once, Ray's and the runs' included, as SLURM signals every process of a job step. process_guard.started gives
    # the study SIGINT at its default, as a terminal's foreground command has it, whatever this pytest inherited.
    with shell(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as first:
        deadline = time.monotonic() + 240
        while not (marker.exists() and done(out)):  # a run waits after its checkpoint at step 2, another finished
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        os.killpg(first.pid, signum) if group else first.send_signal(signum)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 1 and stderr.strip().splitlines()[-1] == INTERRUPTED, stderr[-3000:]
    attempt = Path(marker.read_text()).relative_to(out)  # .../seed0/version_0 of the run caught mid-way
    kept = done(out)
    assert str(attempt.parent) not in kept and 1 <= len(kept) < total
    assert (out / attempt / "checkpoints/last.ckpt").is_file()

    with shell(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as again:
        console, stderr = again.communicate(timeout=240)
    assert again.returncode == 0, stderr[-3000:]
    assert f"{len(kept)} already done, {total - len(kept)} to go" in console
    after = done(out)
    assert all(after[folder] == record for folder, record in kept.items())  # the finished runs were not run again
    assert after[str(attempt.parent)]["continued_from"] == str(attempt / "checkpoints/last.ckpt")
    assert numbers(out) == {k: v for k, v in reference.items() if executor == "ray" or k[0] == "5-9 -> 0-4"}


@needs_ray
def test_ray_gives_the_sequential_numbers(ray_study: Path, reference) -> None:
    assert numbers(ray_study) == reference
    assert {record["executor"] for record in done(ray_study).values()} == {"ray"}


@needs_ray
def test_runs_are_spread_over_both_nodes(cluster, ray_study: Path) -> None:
    import ray

    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    assert {record["node_id"] for record in done(ray_study).values()} == nodes  # the two sources ran side by side


@needs_ray
def test_no_more_runs_at_a_time_than_the_cluster_has_cores(cluster, data: Path, tmp_path: Path) -> None:
    # 12 runs, 5 of them ready at once (a source run; scratch and random backbone at 2 budgets) for 2 cores. A task
    # that waited on Ray inside (ray.get) gave its core back meanwhile, and Ray started another run on it.
    runs = ["--seeds", "1", "--directions", "[59to04]", "--label_budgets", "[10, 100]", "--epochs", "1"]
    out = tmp_path / "out"
    main(study(data, out, runs, executor="ray"))
    spans = [(record["started"], record["finished"]) for record in done(out).values()]
    assert len(spans) == 12
    assert max(sum(start <= t < end for start, end in spans) for t, _ in spans) <= 2


@needs_ray
def test_more_threads_per_run_than_any_machine_has_is_a_one_line_error(cluster, data: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:  # each "node" has 1 CPU: such a task would wait forever
        main([*study(data, tmp_path / "out", ONE, executor="ray"), "--threads_per_run", "2"])  # the last one counts
    assert exit_info.value.code == (
        "lit_transfer.study: error: --threads_per_run 2: the Ray cluster's largest machine has 1 CPU core(s)"
    )


@needs_ray
def test_killed_process_is_retried_and_the_run_continues(cluster, data: Path, reference, tmp_path: Path) -> None:
    out, marker = tmp_path / "out", tmp_path / "killed"
    kill = ["--trainer.callbacks+=crash.KillAt", "--trainer.callbacks.step=3", f"--trainer.callbacks.once={marker}"]
    main(study(data, out, ONE, *kill, executor="ray"))
    killed = Path(marker.read_text()).parent  # the run's folder (.../seed0); its first attempt was version_0
    record = json.loads((killed / "done.json").read_text())
    assert record["continued_from"] == str((killed / "version_0/checkpoints/last.ckpt").relative_to(out))
    assert "-- continuing from" in (killed / "log.txt").read_text()
    assert numbers(out) == {k: v for k, v in reference.items() if k[0] == "5-9 -> 0-4"}


@needs_ray
def test_killed_fine_tuning_run_continues_after_unfreezing(cluster, data: Path, tmp_path: Path) -> None:
    # transfer_finetune: backbone frozen in epoch 0, unfrozen from epoch 1 (4 steps per epoch). Killed at step 11, it
    # continues from step 10, in epoch 2: the unfrozen backbone must train on (Lightning #21901, FreezeFeatures).
    runs = ["--seeds", "1", "--directions", "[59to04]", "--label_budgets", "[10]", "--depths", "[2]", "--epochs", "3"]
    uninterrupted = tmp_path / "uninterrupted"
    main(study(data, uninterrupted, runs, executor="ray"))
    out, marker = tmp_path / "out", tmp_path / "killed"
    kill = ["--trainer.callbacks+=crash.KillAt", "--trainer.callbacks.step=11", f"--trainer.callbacks.once={marker}"]
    main(study(data, out, runs, *kill, "--trainer.callbacks.match=transfer_finetune", executor="ray"))
    killed = Path(marker.read_text()).relative_to(out)
    assert killed.parent == Path("runs/59to04/transfer_finetune/labels10/seed0")
    assert done(out)[str(killed.parent)]["continued_from"] == str(killed / "checkpoints/last.ckpt")
    assert numbers(out) == numbers(uninterrupted) and len(numbers(out)) == 6


@pytest.mark.parametrize("executor", ["sequential", pytest.param("ray", marks=needs_ray)])
def test_failing_run_is_reported_and_the_rest_complete(executor: str, request, data: Path, reference, tmp_path: Path,
                                                       capsys) -> None:  # fmt: skip
    if executor == "ray":
        request.getfixturevalue("cluster")
    out = tmp_path / "out"
    nan = ["--trainer.callbacks+=crash.NanAt", "--trainer.callbacks.step=1"]
    nan.append("--trainer.callbacks.match=04to59/pretrain")
    with pytest.raises(SystemExit) as exit_info:
        main(study(data, out, BOTH, *nan, executor=executor))
    message, console = exit_info.value.code, capsys.readouterr().out
    assert isinstance(message, str) and "\n" not in message
    assert message.startswith("lit_transfer.study: error: 2 of 4 runs failed") and "no report was written" in message
    log = out / "runs/04to59/pretrain/labelsall/seed0/log.txt"
    assert "runs/04to59/pretrain/labelsall/seed0: lit_transfer: error: the training loss became nan" in console
    assert f"(log: {log})" in console and "the training loss became nan at step 1" in log.read_text()
    assert "runs/04to59/transfer_frozen/labelsall/seed0: not run, its source run runs/04to59/pretrain" in console
    assert numbers(out) == {k: v for k, v in reference.items() if k[0] == "5-9 -> 0-4"}  # the others completed
    assert not (out / "report.md").exists()


def test_sequential_study_continues_a_killed_run_from_its_checkpoint(data: Path, reference, tmp_path: Path) -> None:
    out, marker = tmp_path / "out", tmp_path / "killed"
    kill = ["--trainer.callbacks+=crash.KillAt", "--trainer.callbacks.step=3", f"--trainer.callbacks.once={marker}"]
    args = study(data, out, ONE, *kill)
    with shell(*args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as killed:
        assert killed.wait(timeout=240) == -signal.SIGKILL  # the whole study process, in the source run's step 3
    main(args)
    record = done(out)["runs/59to04/pretrain/labelsall/seed0"]
    assert record["continued_from"] == "runs/59to04/pretrain/labelsall/seed0/version_0/checkpoints/last.ckpt"
    assert numbers(out) == {k: v for k, v in reference.items() if k[0] == "5-9 -> 0-4"}
