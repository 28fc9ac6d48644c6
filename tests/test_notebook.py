"""The notebook (notebooks/transfer_learning.ipynb): committed without outputs, executed top to bottom in a real
Jupyter kernel on the real MNIST, and its numbers are the command line's."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import lightning as L
import pytest
from helpers import REAL_MNIST, REPO, only_run, results, run_cli

from lit_transfer import DigitsDataModule, TransferModule
from lit_transfer.callbacks import run_callbacks

NOTEBOOK = REPO / "notebooks" / "transfer_learning.ipynb"
needs_real_mnist = pytest.mark.skipif(
    not REAL_MNIST, reason="set LIT_TRANSFER_MNIST_ROOT to the folder that holds MNIST/raw/ (e.g. ../shared/data)"
)


def test_committed_notebook_has_no_outputs() -> None:
    """The README's policy: committed stripped, so no output can be stale (CI executes it instead)."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    dirty = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])]
    assert not dirty, (
        f"code cells {dirty} of {NOTEBOOK.name} hold outputs: commit it stripped "
        f"(jupyter nbconvert --clear-output --inplace {NOTEBOOK.relative_to(REPO)})"
    )


def cli_stage_one(runs: Path, epochs: int, train_batches: int, *extra: str) -> dict:
    """Stage one through the real command line, shortened; its results.json."""
    run_cli(
        "fit",
        "--config=configs/pretrain.yaml",
        f"--data.data_dir={REAL_MNIST}",
        "--data.download=false",
        f"--trainer.max_epochs={epochs}",
        f"--trainer.limit_train_batches={train_batches}",
        f"--trainer.default_root_dir={runs}",
        "--trainer.enable_progress_bar=false",
        *extra,
    )
    return results(only_run(runs))


def notebook_stage_one(seed: int, epochs: int, train_batches: int) -> dict:
    """Stage one as the notebook's cells run it, in this process: its test summary."""
    L.seed_everything(seed)
    data = DigitsDataModule(REAL_MNIST, digits=[5, 6, 7, 8, 9], download=False, batch_size=128)
    model = TransferModule(num_classes=5)
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_train_batches=train_batches,
        accelerator="cpu",
        devices=1,
        callbacks=run_callbacks(),  # as the notebook and the command line add them
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    return model.test_summary


@pytest.mark.realdata
@needs_real_mnist
def test_a_notebook_style_run_gives_the_command_lines_numbers(tmp_path: Path) -> None:
    """Same seed, same data, same speed callbacks: the same test loss and accuracy, to the bit. What matters: the
    seed before the model is built (the command line seeds first), and nothing that draws random numbers between
    it and training; the command line's other callbacks (checkpoints, loggers, progress) change no number."""
    cli = cli_stage_one(tmp_path / "runs", 1, 5, "--trainer.accelerator=cpu")
    ours = notebook_stage_one(seed=0, epochs=1, train_batches=5)
    assert (ours["test_acc"], ours["test_loss"]) == (cli["test_acc"], cli["test_loss"])
    # ... and the comparison can tell runs apart: another seed gives another loss
    other = notebook_stage_one(seed=1, epochs=1, train_batches=5)
    assert other["test_loss"] != cli["test_loss"]


def kernel_manager(folder: Path):
    """A kernel of this very Python (the one running the tests, with the project installed), whatever kernels the
    machine has registered: a spec of our own in a folder of our own."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    write_kernel_spec(folder / "lit_transfer_test")  # argv: [sys.executable, "-m", "ipykernel_launcher", ...]
    specs = KernelSpecManager(kernel_dirs=[str(folder)])
    return KernelManager(kernel_name="lit_transfer_test", kernel_spec_manager=specs)


@pytest.mark.realdata
@pytest.mark.slow
@needs_real_mnist
def test_the_notebook_runs_top_to_bottom_in_quick_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cell in a real Jupyter kernel, as a learner runs it (LIT_TRANSFER_QUICK=1); fails when any cell raises.
    Then what it printed and drew, and that its stage one learned."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    report = "import json\nprint(json.dumps({'result': source_result}))"
    nb.cells.append(nbformat.v4.new_code_cell(report))
    work = tmp_path / "notebooks"  # the notebook's ../runs/ goes to tmp_path, not into the checkout
    work.mkdir()
    monkeypatch.setenv("LIT_TRANSFER_QUICK", "1")
    monkeypatch.setenv("LIT_TRANSFER_MNIST_ROOT", str(Path(REAL_MNIST).resolve()))  # the kernel runs in `work`
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))  # the kernel imports this checkout's lit_transfer
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    km = kernel_manager(tmp_path / "kernels")
    client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(work)}})
    start = time.perf_counter()
    try:
        client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell raises
    finally:  # nbclient shuts down only kernels it started itself; this one is ours (process_guard checks)
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    print(f"notebook executed in quick mode in {time.perf_counter() - start:.0f} s", file=sys.stderr)

    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 7, "every picture is drawn inline"
    printed_text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "identical: True" in printed_text  # conv1's maps through both stages
    across = re.search(r"Fashion-MNIST, 100 labels per class: digit features frozen ([\d.]+)%, from scratch ([\d.]+)%",
                       printed_text)  # fmt: skip
    assert across and all(10 < float(a) <= 100 for a in across.groups()), printed_text[-400:]  # both above chance
    printed = json.loads("".join(o["text"] for o in nb.cells[-1].outputs if o.get("name") == "stdout"))
    assert printed["result"]["test_acc"] > 0.5  # the kernel's stage one learned (40 batches)
    # The README's promise: the kernel's stage one gives the command line's numbers to the bit (quick mode: 1 epoch of
    # 40 batches, as the notebook's QUICK settings).
    cli = cli_stage_one(tmp_path / "cli", 1, 40, "--trainer.accelerator=cpu")
    assert (printed["result"]["test_acc"], printed["result"]["test_loss"]) == (cli["test_acc"], cli["test_loss"])
