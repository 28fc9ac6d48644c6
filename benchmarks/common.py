"""Shared by the REFERENCE scripts: the notebook's data split and model, written the way people usually do."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import torch
from torch import nn
from torchvision import datasets

# the real MNIST beside the checkout (../shared/data/MNIST/raw), wherever the script is started from
DATA_DIR = str(Path(__file__).resolve().parents[2] / "shared" / "data")

STAGES = (("stage_one", [5, 6, 7, 8, 9]), ("stage_two", [0, 1, 2, 3, 4]))
REVERSE = (("stage_one", [0, 1, 2, 3, 4]), ("stage_two", [5, 6, 7, 8, 9]))


def notebook_cnn(num_classes: int) -> tuple[nn.Module, nn.Module]:
    features = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten()
    )
    classifier = nn.Sequential(nn.Linear(4608, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes))
    return features, classifier


def split_indices(labels: torch.Tensor, digits: list[int], val_size: float, seed: int) -> torch.Tensor:
    """Indices of the training images of ``digits`` left after holding out ``val_size`` (lit_transfer's split)."""
    keep = torch.isin(labels, torch.tensor(digits)).nonzero().squeeze(1)
    order = torch.randperm(len(keep), generator=torch.Generator().manual_seed(seed))
    return keep[order[round(val_size * len(keep)) :].sort().values]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def peak_gpu_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def emit(record: dict) -> None:
    print("RESULT " + json.dumps(record), flush=True)
    sys.stdout.flush()


def mnist(root: str, train: bool) -> datasets.MNIST:
    return datasets.MNIST(root, train=train, download=False)
