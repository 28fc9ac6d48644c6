"""The install check: ``python -m lit_transfer --version`` (versions and devices), and a torch/torchvision pair that
does not match caught before any command starts, in one line with its fix.

torchvision's compiled operators (``torchvision::nms``, ...) are built against one torch release; with another (easy
to get by installing the two from different indexes, e.g. PyTorch's CPU wheels and PyPI's) ``import torchvision``
fails deep inside its own code with ``operator torchvision::nms does not exist``. No library turns that into advice,
so this does: it loads the operators first and names the pair to install.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from lit_transfer.errors import count

COMPATIBILITY = "https://github.com/pytorch/vision#installation"  # torchvision's table of matching releases
INDEX = "https://download.pytorch.org/whl/"  # PyTorch's own wheels, one index per build (cpu, cu130, ...)
PACKAGES = ("lit_transfer", "torch", "torchvision", "lightning")


def installed(package: str) -> str:
    """The installed version of ``package`` (from its metadata, so a package that fails to import has one), or why
    there is none. torch's own ``__version__`` also names its build (``2.14.1+cpu``), which its metadata may not."""
    if package == "torch":
        import torch

        return torch.__version__
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_torchvision_ops() -> None:
    """Import torchvision and look up one of its compiled operators: what fails when it was built for another torch."""
    import torch
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    torch.ops.torchvision.nms  # noqa: B018  (AttributeError when torchvision's extension did not load)


def matching_torchvision(torch_version: str) -> str | None:
    """The torchvision release series made for ``torch_version`` (torch 2.m pairs with torchvision 0.(m + 15): 2.4 with
    0.19, 2.14 with 0.29, per torchvision's table), or None where that rule does not apply."""
    major, _, rest = torch_version.partition(".")
    minor = rest.split(".")[0]
    if major != "2" or not minor.isdigit():
        return None
    return f"0.{int(minor) + 15}"


def mismatch_message(torch_version: str, torchvision_version: str, error: BaseException) -> str:
    """One line: which pair does not work, and the pip command that fixes it."""
    build = torch_version.partition("+")[2]  # "cpu", "cu130" or "" (PyPI's default build)
    index = f" --index-url {INDEX}{build}" if build else ""
    series = matching_torchvision(torch_version)
    cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if series and not torchvision_version.startswith(series + "."):
        return (
            f"torchvision {torchvision_version} does not match torch {torch_version} ({cause}): "
            f"pip install 'torchvision=={series}.*'{index} (the release for this torch; pairs: {COMPATIBILITY})"
        )
    return (
        f"torchvision {torchvision_version} cannot load its operators with torch {torch_version} ({cause}): "
        f"reinstall both from one index, pip install --force-reinstall 'torch=={torch_version.partition('+')[0]}' "
        f"'torchvision=={torchvision_version.partition('+')[0]}'{index} (pairs: {COMPATIBILITY})"
    )


def torchvision_problem(load_ops: Callable[[], None] = load_torchvision_ops) -> str | None:
    """None when torchvision works with this torch; otherwise the one line that says how to fix it."""
    try:
        load_ops()
    except (
        Exception
    ) as err:  # RuntimeError (operator ... does not exist), AttributeError, ImportError (undefined symbol)
        return mismatch_message(installed("torch"), installed("torchvision"), err)
    return None


def devices() -> list[str]:
    """What torch can run on here: the CPU (model, cores this process may use) and each GPU."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    found = [f"cpu: {cpu_model()}, {count(cores, 'core')} usable"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    else:
        built = f"torch built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only torch"
        found.append(f"cuda: none found ({built})")
    if torch.backends.mps.is_available():
        found.append("mps: Apple GPU")
    return found


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:  # Linux: the processor's name
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def version_report(problem: str | None) -> str:
    """What ``--version`` prints: each package's version, Python's, and the devices (when torch works)."""
    lines = [f"{name:<13}{installed(name)}" for name in PACKAGES]
    # where this lit_transfer is imported from (an editable install's metadata keeps the version it was installed at)
    lines[0] += f" ({Path(__file__).parents[1]})"  # the package: lit_transfer/
    if problem is None:  # torchvision imports: its own version names its build, as torch's does
        import torchvision

        lines[2] = f"{'torchvision':<13}{torchvision.__version__}"
    lines.append(f"{'Python':<13}{platform.python_version()} ({sys.executable})")
    if problem is None:
        lines += [f"{'device':<13}{device}" for device in devices()]
    return "\n".join(lines)


def exit_if_broken(prog: str, load_ops: Callable[[], None] = load_torchvision_ops) -> None:
    """Before a command starts: exit with the one-line fix if torchvision does not work with this torch."""
    if problem := torchvision_problem(load_ops):
        sys.exit(f"{prog}: error: {problem}")
