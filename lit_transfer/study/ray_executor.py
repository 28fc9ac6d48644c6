"""``--executor ray``: the study's runs as Ray tasks, side by side on every core and GPU of a machine or a cluster.

Why Ray tasks, not Ray Tune trials: the study is a fixed plan with one dependency (a target run needs its source
run's checkpoint), which a task expresses directly, its source's result as an argument, so each target starts as
soon as its own source is done, without a barrier between phases. Tune's trials are independent samples of a
search space, with Tune's own trial folders, checkpoint bookkeeping, stopping and search algorithms: none of which
the study uses, and the source-target dependency would need one Tune run per phase. A task also runs exactly the
sequential study's ``execute`` (the same CLI command line, the same run folder), and Ray retries a task whose
process died (SIGKILL, out of memory), which then continues from the run's own ``last.ckpt``.

Ray is imported inside the functions: the sequential study needs no Ray.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from lit_transfer.data import DigitsDataModule
from lit_transfer.errors import UserError, count
from lit_transfer.speed.cpu import flush_denormals
from lit_transfer.study.execute import execute, source_checkpoint
from lit_transfer.study.plan import Run
from lit_transfer.study.progress import ProgressLine, duration, time_left
from lit_transfer.study.report import write_csv
from lit_transfer.study.stats import row
from lit_transfer.study.stop import keep_sigterm_handler

RETRIES = 3  # attempts after the first when a run's process dies (Ray's default, stated): each continues the run
POLL_S = 1.0  # how often the driver looks for news (and notices Ctrl-C) while runs are in flight


def require_ray() -> None:
    """A one-line error with the fix when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError('--executor ray needs Ray: pip install -e ".[ray]" (or leave --executor sequential)') from None


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), or start a local Ray instance with this machine's cores
    and GPUs; returns whether this study started the connection (and so ends it). A Ray already initialised in this
    process (a notebook, a test) is used as it is."""
    import ray

    if ray.is_initialized():
        return False
    try:
        with keep_sigterm_handler():  # ray.init's own SIGTERM handler exits without a word: the study's goes back
            if address or os.environ.get("RAY_ADDRESS"):
                # log_to_driver off: a run's output goes to its log.txt, the console keeps the study's progress line
                ray.init(address=address, log_to_driver=False)
            else:
                # A new local instance for this study only ("local": plain ray.init() would join a cluster that
                # `ray start` left on this machine; --ray_address auto does that on purpose), without a dashboard (a
                # web server nobody asked for) or usage statistics sent on the user's behalf unless they opted in.
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                ray.init(address="local", include_dashboard=False, log_to_driver=False)
    except ConnectionError as err:
        fix = "start one with `ray start --head` and pass the address it prints"
        if os.environ.get("RAY_AUTH_MODE") != "token":
            # Ray 2.60's `ray start --head` (with a ~/.ray/auth_token on the machine) asked for its token here,
            # which a driver sends only in token mode; Ray prints "InvalidAuthToken", the ConnectionError not why.
            fix += (
                "; if Ray said InvalidAuthToken, set RAY_AUTH_MODE=token here as on every node, with the cluster's "
                "token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
            )
        raise UserError(
            f"--ray_address {address or os.environ.get('RAY_ADDRESS')}: could not join a Ray cluster there ({err}); "
            + fix
        ) from None
    return True


def run_task(run: Run, settings: dict, root: Path, source: dict | None, threads: int, progress: Any) -> dict:
    """One run in a Ray worker process: ``execute`` with this task's share of the machine.

    ``source``: the source run's record, resolved by Ray from its task's result before this task starts.
    """
    import ray
    import torch

    flush_denormals()  # before this process's first parallel torch work (lit_transfer/speed/cpu.py)
    if not ray.get_gpu_ids():
        # A CPU task must not take a GPU it was not given: Ray (>= 2.4x) leaves CUDA_VISIBLE_DEVICES alone then,
        # and the CLI's accelerator "auto" would pick a GPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    torch.set_num_threads(threads)  # Ray also sets OMP_NUM_THREADS from num_cpus; torch may have started already
    # This run is running now (the study's progress line), told to the queue's actor without waiting: a task that
    # waits on Ray (ray.get, as in Queue.put_nowait) gives its CPUs back meanwhile and takes them again after, and
    # Ray starts another run on them (3 runs on 2 cores were measured).
    progress.actor.put_nowait.remote(run)
    context = ray.get_runtime_context()
    where = {"executor": "ray", "host": socket.gethostname(), "node_id": context.get_node_id()}
    return execute(run, settings, root, source_checkpoint(root, source), where)


def task_options(ray: Any, threads_per_run: int, runs_per_gpu: int) -> tuple[dict[str, Any], int, str]:
    """Each task's resources, how many runs the cluster holds at a time, and that in words."""
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    cpus, gpus = sum(n.get("CPU", 0) for n in nodes), sum(n.get("GPU", 0) for n in nodes)
    if gpus and runs_per_gpu:
        # A small run leaves most of a GPU idle (launch-bound): several share one, each driven by one CPU core.
        slots = sum(min(int(n.get("GPU", 0) * runs_per_gpu), int(n.get("CPU", 0))) for n in nodes)
        options = {"num_cpus": 1, "num_gpus": 1 / runs_per_gpu}
        return options, slots, f"{runs_per_gpu} per GPU on {gpus:g} GPUs, {cpus:g} CPUs, {len(nodes)} node(s)"
    slots = sum(int(n.get("CPU", 0)) // threads_per_run for n in nodes)  # a task runs on one machine
    if not slots:
        biggest = max((n.get("CPU", 0) for n in nodes), default=0)
        why = f"the Ray cluster's largest machine has {biggest:g} CPU core(s)"
        raise UserError(f"--threads_per_run {threads_per_run}: {why}")
    layout = f"{threads_per_run} CPU core(s) each, {cpus:g} CPUs, {len(nodes)} node(s)"
    return {"num_cpus": threads_per_run}, slots, layout


def run_all(
    root: Path,
    runs: list[Run],
    settings: dict[str, Any],
    records: dict[Run, dict],
    address: str | None,
    threads_per_run: int,
    runs_per_gpu: int,
) -> tuple[dict[Run, dict], dict[Run, str]]:
    """Run what is not finished yet (``records``: the finished runs) as Ray tasks; ``results.csv`` as runs finish.
    Returns every finished run's record and why each failed run failed."""
    import ray
    from ray.util.queue import Queue

    if all(run in records for run in runs):
        return records, {}
    # A worker's working directory is that of `ray start` on its machine: every node must read the same data folder.
    settings = {**settings, "data_dir": str(Path(settings["data_dir"]).resolve())}
    if settings["download"]:  # once, here: runs side by side would each download the same files at the same time
        DigitsDataModule(settings["data_dir"], dataset=settings["dataset"], download=True).prepare_data()
    started_here = connect(address)
    try:
        options, slots, layout = task_options(ray, threads_per_run, runs_per_gpu)
        print(f"Ray: {count(slots, 'run')} at a time ({layout})")
        progress = Queue(actor_options={"num_cpus": 0})  # tasks report their start here
        task = ray.remote(run_task).options(max_retries=RETRIES, retry_exceptions=False, **options)
        pending = submit(task, root, runs, settings, records, options["num_cpus"], progress)
        return collect(ray, root, runs, settings, records, pending, slots, progress)
    finally:
        if started_here:
            ray.shutdown()


def submit(task: Any, root: Path, runs: list[Run], settings: dict, records: dict, threads: int, progress: Any) -> dict:
    """One task per unfinished run, source runs first (they gate the transfer runs); a transfer run gets its source
    run's task result as an argument, which makes Ray start it as soon as that source is done."""
    sources = {(r.direction, r.seed): r for r in runs if r.condition == "pretrain"}
    refs: dict[Run, Any] = {}
    for run in sorted((r for r in runs if r not in records), key=lambda r: r.condition != "pretrain"):
        source = None
        if run.condition.startswith("transfer"):
            source_run = sources[run.direction, run.seed]
            source = records.get(source_run) or refs[source_run]
        refs[run] = task.remote(run, settings, root, source, threads, progress)
    return {ref: run for run, ref in refs.items()}


def collect(
    ray: Any, root: Path, runs: list[Run], settings: dict, records: dict, pending: dict, slots: int, progress: Any
) -> tuple[dict[Run, dict], dict[Run, str]]:
    """Wait for the tasks as they finish, with one progress line."""
    from ray.util.queue import Empty

    records, failed, running = dict(records), {}, set()
    walls = {run: record["wall_s"] for run, record in records.items()}
    line, start = ProgressLine(), time.perf_counter()
    # Ctrl-C or SIGTERM (stop.py): nothing to cancel by hand. Ray ends a driver's tasks, killing their processes,
    # when it disconnects (or stops the local instance); each run cut short continues from its last.ckpt next time.
    # (ray.cancel here raced with Ray's own processes, which a terminal's Ctrl-C reaches too, and crashed the driver:
    # Ray 2.60.)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            while True:
                try:
                    running.add(progress.get_nowait())
                except Empty:
                    break
            for ref in ready:
                run = pending.pop(ref)
                running.discard(run)
                try:
                    records[run] = ray.get(ref)
                except Exception as err:  # this run failed (or its source did): reported, the others go on
                    failed[run] = why(err, root, run, runs, records)
                    line.note(f"failed: {failed[run]}")
                    continue
                walls[run] = records[run]["wall_s"]
                write_csv(root, [row(r, records[r], root) for r in runs if r in records])  # a partial study is readable
            todo = list(pending.values())
            status = f"study: {len(records)}/{len(runs)} done, {len(running & set(todo))} running, {len(failed)} failed"
            line.show(f"{status}, time left {duration(time_left(todo, walls, settings, slots))}" if todo else status)
    finally:
        line.close()
    print(f"{len(records)} of {count(len(runs), 'run')} done ({time.perf_counter() - start:.0f} s in this session)")
    return records, failed


def why(err: Exception, root: Path, run: Run, runs: list[Run], records: dict[Run, dict]) -> str:
    """One line on why ``run`` did not finish, with its log where it ran."""
    import ray

    source = next(r for r in runs if r.condition == "pretrain" and (r.direction, r.seed) == (run.direction, run.seed))
    if run.condition.startswith("transfer") and source not in records:  # Ray passed the source's error on
        return f"{run.folder.as_posix()}: not run, its source run {source.folder.as_posix()} failed"
    cause = err.cause if isinstance(err, ray.exceptions.RayTaskError) else err
    if isinstance(cause, UserError):  # RunFailed, or a run stopped by a signal inside its process
        return str(cause)
    if isinstance(err, ray.exceptions.WorkerCrashedError | ray.exceptions.OutOfMemoryError):
        log = root / run.folder / "log.txt"
        return f"{run.folder.as_posix()}: its process died {RETRIES + 1} times ({type(err).__name__}; log: {log})"
    first = (str(cause).splitlines() or [""])[0]
    return f"{run.folder.as_posix()}: {type(cause).__name__}: {first} (log: {root / run.folder / 'log.txt'})"
