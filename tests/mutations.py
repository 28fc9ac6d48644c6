"""Break each guarantee on purpose and check that its test notices: ``python tests/mutations.py [--quick] [names...]``.

Each mutation replaces one piece of code in a temporary copy of the repository (never this checkout) and runs the
test meant to catch it there; the test must fail. Prints caught/missed per mutation and exits 1 if any was
missed. CI runs the mutations whose tests are in the quick loop (tests/test_mutations.py, one test per mutation,
about two minutes; ``--quick`` here). All of them, after changing a guarantee or its test: ``python
tests/mutations.py`` (about 17 minutes on the project's 2-core machine; the slow ones train, start servers, Ray or a
browser).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Mutation:
    name: str
    file: str  # relative to the repository
    old: str  # must occur exactly once
    new: str
    tests: list[str]  # pytest node ids or -k expressions ("file::test" or "file -k expr")
    # Caught only when processes really run at the same moment (a race): not in CI's --quick run, which shares the
    # cores with the rest of the suite (there the racers may run one after another); in the full run, on a quiet
    # machine, it is.
    race: bool = False


MUTATIONS = [
    Mutation(
        "run folders claimed with mkdir(exist_ok=True), not atomically",
        "lit_transfer/command_line/run_dirs.py",
        '(root / f"version_{n}").mkdir()',
        '(root / f"version_{n}").mkdir(exist_ok=True)',
        ["tests/test_safety.py::test_runs_started_together_never_share_a_folder"],
        race=True,
    ),
    Mutation(
        "runs/<stage>/latest swapped by removing the old link first (moments without one)",
        "lit_transfer/command_line/run_dirs.py",
        "        os.replace(temporary, link)  #",
        "        link.unlink(missing_ok=True)\n        os.replace(temporary, link)  #",
        ["tests/test_safety.py -k never_missing"],
        race=True,
    ),
    Mutation(
        "a file of the user's named latest replaced by the link",
        "lit_transfer/command_line/run_dirs.py",
        "    if link.exists() and not link.is_symlink():",
        "    if False:",
        ["tests/test_safety.py -k users_own"],
    ),
    Mutation(
        "a finished stage one not pointed at by runs/pretrain/latest (the Quick start's stage two fails)",
        "lit_transfer/cli.py",
        "                run_dirs.point_latest(self.run_dir)",
        "                pass",
        ["tests/test_docs.py -k quick_start"],
    ),
    Mutation(
        "the top-level help imports torch first (seconds)",
        "lit_transfer/__main__.py",
        '    if sys.argv[1:2] in ([], ["-h"], ["--help"]):',
        "    if False:",
        ["tests/test_newcomer_cli.py -k without_importing_torch"],
    ),
    Mutation(
        "training metrics of one process only (no sync across processes)",
        "lit_transfer/module.py",
        '            self.metrics[f"{split}_acc"] = MulticlassAccuracy(n, average="micro", validate_args=False)',
        '            self.metrics[f"{split}_acc"] = MulticlassAccuracy(\n'
        '                n, average="micro", validate_args=False, sync_on_compute=False\n            )',
        ["tests/test_ddp.py"],
    ),
    Mutation(
        "--speed.feature_cache false ignored (always cached)",
        "lit_transfer/callbacks/__init__.py",
        "    if feature_cache:\n        callbacks.append(FeatureCache())",
        "    if True:\n        callbacks.append(FeatureCache())",
        ["tests/test_speed_paths.py -k cached_features"],
    ),
    Mutation(
        "the note calls bf16 faster whatever the probe measured",
        "lit_transfer/command_line/precision.py",
        "        if ratio < CLEAR_RATIO:\n            return None",
        "        if False:\n            return None",
        ["tests/test_precision.py -k nothing_where"],
    ),
    Mutation(
        "a cached bf16 ratio trusted whatever it holds",
        "lit_transfer/command_line/precision.py",
        "    if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio < 100:",
        "    if ratio is not None:",
        ["tests/test_precision.py -k broken_cache"],
    ),
    Mutation(
        "the bf16 probe draws from training's random numbers",
        "lit_transfer/command_line/precision.py",
        "        torch.set_rng_state(state)",
        "        pass",
        ["tests/test_precision.py -k random_state"],
    ),
    Mutation(
        "a bar that is not drawn still gathers every metric after each batch",
        "lit_transfer/callbacks/progress.py",
        "        if self._is_live():\n            super().on_train_batch_end(",
        "        if True:\n            super().on_train_batch_end(",
        ["tests/test_logs.py -k gathers"],
    ),
    Mutation(
        "cached features wrong (doubled)",
        "lit_transfer/callbacks/feature_cache.py",
        "            cache[start : start + len(chunk)] = chunk",
        "            cache[start : start + len(chunk)] = 2 * chunk",
        ["tests/test_speed_paths.py -k cached_features"],
    ),
    Mutation(
        "the NaN watch lets a checkpoint through after a deferred bad step",
        "lit_transfer/callbacks/loss_watch.py",
        "        self.check(trainer)  # raising here keeps the bad weights out of the checkpoint file",
        "        pass",
        ["tests/test_errors.py -k 'nan_loss and deferred'"],
    ),
    Mutation(
        "bf16-mixed without autocast in training",
        "lit_transfer/module.py",
        '        loss, preds = self._step(batch, "train")',
        '        with torch.autocast("cpu", enabled=False):\n            loss, preds = self._step(batch, "train")',
        ["tests/test_pipeline.py -k bf16"],
    ),
    Mutation(
        "non-dense inputs dropped at another rate",
        "lit_transfer/speed/layers.py",
        '        if not self.training or self.p == 0 or x.device.type != "cpu" or not exact:\n'
        "            return F.dropout(x, self.p, self.training)",
        '        if not self.training or self.p == 0 or x.device.type != "cpu" or not exact:\n'
        "            return F.dropout(x, 0.5, self.training)",
        ["tests/test_layers.py -k non_dense"],
    ),
    Mutation(
        "the answer's numbers swapped between groups",
        "lit_transfer/study/report.py",
        'scratch, rand = acc(rows, first, "scratch", budget), acc(rows, first, "random_frozen", budget)',
        'rand, scratch = acc(rows, first, "scratch", budget), acc(rows, first, "random_frozen", budget)',
        ["tests/test_study.py -k answer_numbers"],
    ),
    Mutation(
        "a source checkpoint that lacks layers transferred anyway (non-strict load)",
        "lit_transfer/checkpoint.py",
        "        network.load_state_dict(weights)",
        "        network.load_state_dict(weights, strict=False)",
        ["tests/test_errors.py -k backbone_does_not_fit"],
    ),
    Mutation(
        "a layer of another shape not turned into the one-line error",
        "lit_transfer/checkpoint.py",
        '    except RuntimeError:\n        raise UserError(\n            f"the weights in {path} do not fit this model',
        '    except KeyError:\n        raise UserError(\n            f"the weights in {path} do not fit this model',
        ["tests/test_errors.py -k backbone_does_not_fit"],
    ),
    Mutation(
        "resuming a gradually unfrozen stage leaves the backbone frozen (Lightning #21901)",
        "lit_transfer/freeze.py",
        "                    param.requires_grad_(True)",
        "                    pass",
        ["tests/test_resume.py -k mid-epoch-after-unfreezing", "tests/test_study_ray.py -k fine_tuning"],
    ),
    Mutation(
        "last.ckpt not written with the final weights",
        "lit_transfer/callbacks/last_checkpoint.py",
        "        if self.save_last and not self._should_skip_saving_checkpoint(trainer):",
        "        if False:",
        ["tests/test_resume.py -k 'test_sigkill_then_resume and mid-epoch-0'"],
    ),
    Mutation(
        "no RNG state restored on resume",
        "lit_transfer/callbacks/marker.py",
        '            torch.set_rng_state(rng["torch"].cpu())',
        "            pass",
        ["tests/test_resume.py -k 'test_sigkill_then_resume and mid-epoch-0'"],
    ),
    Mutation(
        "older checkpoints' FreezeFeatures groups not renamed",
        "lit_transfer/checkpoint.py",
        '            group["params"] = [named_layer(name) for name in group["params"]]',
        "            pass",
        ["tests/test_legacy_checkpoints.py"],
    ),
    Mutation(
        "the study's Ray tasks transfer from the other direction's source run",
        "lit_transfer/study/ray_executor.py",
        "            source_run = sources[run.direction, run.seed]",
        "            source_run = next(r for k, r in sources.items() if k[0] != run.direction)",
        ["tests/test_study_ray.py::test_ray_gives_the_sequential_numbers"],
    ),
    Mutation(
        "the study's Ray tasks all pinned to the driver's node",
        "lit_transfer/study/ray_executor.py",
        '    return {"num_cpus": threads_per_run}, slots, layout',
        "    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Node\n\n"
        "    here = Node(ray.get_runtime_context().get_node_id(), soft=False)\n"
        '    return {"num_cpus": threads_per_run, "scheduling_strategy": here}, slots, layout',
        ["tests/test_study_ray.py::test_runs_are_spread_over_both_nodes"],
    ),
    Mutation(
        "a study run whose process was killed is not retried",
        "lit_transfer/study/ray_executor.py",
        "RETRIES = 3",
        "RETRIES = 0",
        ["tests/test_study_ray.py::test_killed_process_is_retried_and_the_run_continues"],
    ),
    Mutation(
        "a study run cut short starts over instead of continuing from its last.ckpt",
        "lit_transfer/study/execute.py",
        "    resume = last_checkpoint(folder)",
        "    resume = None",
        [
            "tests/test_study_ray.py::test_sequential_study_continues_a_killed_run_from_its_checkpoint",
            "tests/test_study_ray.py::test_killed_process_is_retried_and_the_run_continues",
        ],
    ),
    Mutation(
        "a failing run stops the sequential study",
        "lit_transfer/study/sequential.py",
        "            failed[run] = str(err)",
        "            raise",
        ["tests/test_study_ray.py -k 'failing and sequential'"],
    ),
    Mutation(
        "a failing run stops the Ray study",
        "lit_transfer/study/ray_executor.py",
        "                    failed[run] = why(err, root, run, runs, records)",
        "                    raise",
        ["tests/test_study_ray.py -k 'failing and ray'"],
    ),
    Mutation(
        "the study's report written although runs failed",
        "lit_transfer/study/runner.py",
        "    if failed:  #",
        "    if False:  #",
        ["tests/test_study_ray.py -k 'failing and sequential'"],
    ),
    Mutation(
        "an interrupted study runs its finished runs again",
        "lit_transfer/study/execute.py",
        "    if not done.is_file():\n        return None",
        "    if True:\n        return None",
        ["tests/test_study_ray.py -k 'stopped_study and ctrl-c and ray'"],
    ),
    Mutation(
        "SIGTERM ends the Ray study without the interrupted line (ray.init's handler left in place)",
        "lit_transfer/study/stop.py",
        "            signal.signal(signal.SIGTERM, before)",
        "            pass",
        ["tests/test_study_ray.py -k 'stopped_study and sigterm and ray'"],
    ),
    Mutation(
        "SIGTERM not turned into the study's Ctrl-C",
        "lit_transfer/study/stop.py",
        "    signal.signal(signal.SIGTERM, ctrl_c)",
        "    signal.signal(signal.SIGTERM, signal.SIG_DFL)",
        ["tests/test_study_ray.py -k 'stopped_study and sigterm and ray'"],
    ),
    Mutation(
        "a run stopped by a signal reported as an error, not as the study's interruption",
        "lit_transfer/study/runner.py",
        "    except (KeyboardInterrupt, RunStopped):",
        "    except KeyboardInterrupt:",
        ["tests/test_study_ray.py -k 'stopped_study and sequential'"],
    ),
    Mutation(
        "fit's Interrupt takes over an ignored SIGINT",
        "lit_transfer/callbacks/interrupt.py",
        "            if previous != signal.SIG_IGN:",
        "            if True:",
        ["tests/test_lightning_conventions.py -k ignored_sigint"],
    ),
    Mutation(
        "the tests start their processes with the signals pytest inherited",
        "tests/process_guard.py",
        '**{"preexec_fn": default_signals, **popen}',
        "**popen",
        ["tests/test_process_guard.py -k background"],
    ),
    Mutation(
        "a process left running by a test goes unnoticed",
        "tests/process_guard.py",
        "    assert not left,",
        "    assert True or not left,",
        ["tests/test_process_guard.py -k left_running"],
    ),
    Mutation(
        "the validation accuracy of the epochs before a resume lost",
        "lit_transfer/callbacks/stage_report.py",
        '"val_acc": self.val_acc}',
        "}",
        ["tests/test_resume.py -k 'test_sigkill_then_resume and end-of-epoch-1'"],
    ),
    Mutation(
        "--executor ray without Ray not a one-line error",
        "lit_transfer/study/runner.py",
        "        ray_executor.require_ray()",
        "        pass",
        ["tests/test_study.py -k without_ray"],
    ),
    Mutation(
        "export --format pt2 without the class names",
        "lit_transfer/export/formats.py",
        "torch.export.save(program, path, extra_files=info)",
        "torch.export.save(program, path)",
        ["tests/test_export.py -k 'fresh_process and pt2'"],
    ),
    Mutation(
        "a torch/torchvision mismatch not checked before a command",
        "lit_transfer/__main__.py",
        "problem = setup_check.torchvision_problem()",
        "problem = None",
        ["tests/test_setup_check.py -k 'stops_every and command1'"],
    ),
    Mutation(
        "the live progress bar drawn into a file",
        "lit_transfer/callbacks/progress.py",
        "return super().is_disabled or not self._is_live()",
        "return super().is_disabled",
        ["tests/test_logs.py -k one_line_per_epoch"],
    ),
    Mutation(
        "counts always plural (1 epochs)",
        "lit_transfer/errors.py",
        "noun if n == 1 else plural or noun + 's'",
        "plural or noun + 's'",
        ["tests/test_docs.py -k proper_english"],
    ),
    Mutation(
        "Teach pressed twice at once in one session: both run",
        "lit_transfer/demo/teach_tab.py",
        "            if session in self.busy:",
        "            if False:",
        ["tests/test_demo.py::test_bad_teaching_input_gets_one_message_each"],
    ),
    Mutation(
        "the taught model's backbone not frozen (no FreezeFeatures)",
        "lit_transfer/demo/teach.py",
        "run_callbacks([FreezeFeatures()] if transfer else [])",
        "run_callbacks([])",
        ["tests/test_demo.py::test_teach_and_predict_through_the_api_and_the_checkpoint_works_on_the_command_line"],
    ),
    Mutation(
        "the notebook seeded unlike the command line",
        "notebooks/transfer_learning.ipynb",
        "SEED = 0  # the configs' seed_everything",
        "SEED = 1  # the configs' seed_everything",
        ["tests/test_notebook.py -k top_to_bottom"],
    ),
    Mutation(
        "a notebook cell raises",
        "notebooks/transfer_learning.ipynb",
        "source_result = source_model.test_summary  #",
        "source_result = source_model.no_such_summary  #",
        ["tests/test_notebook.py -k top_to_bottom"],
    ),
    Mutation(
        "the page hands Gradio its pictures to write (rewritten while being served)",
        "lit_transfer/demo/pictures.py",
        "        return str(path)",
        "        return picture",
        ["tests/test_demo.py -k concurrent"],
    ),
    Mutation(
        "one temporary file per process for atomic writes (threads share it)",
        "lit_transfer/files.py",
        '    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")',
        '    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")',
        ["tests/test_files.py -k threads"],
    ),
    Mutation(
        "a frozen BatchNorm left training (normalising each batch by its own statistics)",
        "lit_transfer/freeze.py",
        "            norm.train(not frozen)",
        "            norm.train(True)",
        ["tests/test_batch_norm.py -k cached_features"],
    ),
    Mutation(
        "a backbone's BatchNorm not transferred with its convolution",
        "lit_transfer/checkpoint.py",
        '                copied.append(f"bn{i + 1}")',
        '                copied.append(f"bn{i + 1}")\n'
        '                getattr(backbone, f"bn{i + 1}").reset_parameters()',
        ["tests/test_batch_norm.py -k stays_as_stage_one"],
    ),
    Mutation(
        "the web page resizes with another filter than Pillow's Lanczos (its input drifts from the image rule)",
        "lit_transfer/export/page/rule.js",
        "x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0",
        "x >= -2 && x < 2 ? sinc(x) * sinc(x / 2) : 0",
        ["tests/test_web.py -k dropped_file"],
    ),
    Mutation(
        "the web page's fc1 reads the features in PyTorch's (channel, row, column) order",
        "lit_transfer/export/web.py",
        ".permute(2, 3, 1, 0).reshape(-1, fc1.out_features)",
        ".reshape(-1, fc1.out_features)",
        ["tests/test_web.py -k drawn_digit"],
    ),
    Mutation(
        "a test's in-process command leaves torch's thread count to the next (the notebook's numbers then differ)",
        "tests/conftest.py",
        "    yield\n    torch.set_num_threads(threads)",
        "    yield",
        [
            "tests/test_demo.py::test_no_runs_is_a_one_line_error_naming_what_was_looked_for "
            "tests/test_notebook.py::test_the_notebook_runs_top_to_bottom_in_quick_mode"
        ],
    ),
]


def run_one(mutation: Mutation, copy: Path) -> tuple[bool, str]:
    path = copy / mutation.file
    original = path.read_text()
    if original.count(mutation.old) != 1:
        return False, f"the code to mutate was not found exactly once in {mutation.file}: update this script"
    path.write_text(original.replace(mutation.old, mutation.new))
    try:
        env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONWARNINGS": "ignore"}
        if env.get("LIT_TRANSFER_MNIST_ROOT"):  # as given from here; the tests run in the copy, elsewhere
            env["LIT_TRANSFER_MNIST_ROOT"] = str(Path(env["LIT_TRANSFER_MNIST_ROOT"]).resolve())
        env.pop("LIT_TRANSFER_RUN_DIR", None)
        for test in mutation.tests:
            cmd = f"{sys.executable} -m pytest -q -x -p no:cacheprovider {test}"
            done = subprocess.run(cmd, shell=True, cwd=copy, env=env, capture_output=True, text=True)
            if done.returncode == 1:  # tests ran and failed: caught
                failed = [line for line in done.stdout.splitlines() if line.startswith(("E ", "FAILED"))]
                return True, (failed[:1] or ["failed"])[0][:160]
            if done.returncode != 0:
                return False, f"pytest could not run {test} (exit {done.returncode}): {done.stdout[-300:]}"
        return False, "all its tests passed with the code broken"
    finally:
        path.write_text(original)


def copy_of_repository(folder: Path) -> Path:
    """The checkout's code, tests and files, copied into ``folder``: the mutations are applied there, never here."""
    ignore = shutil.ignore_patterns(".venv", ".git", "runs", "reports", "__pycache__", "*.ckpt", "benchmarks")
    return Path(shutil.copytree(REPO, folder / "repo", ignore=ignore))


def quick(mutation: Mutation) -> bool:
    """Whether every test that must catch ``mutation`` is in the quick loop (no file of ``SLOW_FILES``)."""
    from conftest import SLOW_FILES  # tests/ is this script's folder, first on sys.path

    fast = all(Path(test.split("::")[0].split()[0]).name not in SLOW_FILES for test in mutation.tests)
    return fast and not mutation.race


def main(args: list[str]) -> int:
    names = [a for a in args if a != "--quick"]
    chosen = [m for m in MUTATIONS if not names or any(n in m.name for n in names)]
    if "--quick" in args:  # what CI runs (tests/test_mutations.py): the mutations its quick tests must catch
        chosen = [m for m in chosen if quick(m)]
    with tempfile.TemporaryDirectory(prefix="lit_transfer_mutations_") as tmp:
        copy = copy_of_repository(Path(tmp))
        start, missed = time.perf_counter(), 0
        for mutation in chosen:
            t0 = time.perf_counter()
            caught, detail = run_one(mutation, copy)
            missed += not caught
            status = "caught" if caught else "MISSED"
            print(f"{status:7s} {mutation.name} ({time.perf_counter() - t0:.0f} s): {detail}", flush=True)
        print(f"{len(chosen) - missed} of {len(chosen)} caught in {time.perf_counter() - start:.0f} s")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
