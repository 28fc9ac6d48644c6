"""Every speed trick in one place, each in a file that says why it exists (figures: benchmarks/RESULTS.md).

The notebook's code (``model.py``, ``module.py``) knows none of them: each is a Lightning callback that the entry
point adds (``callbacks()`` below: ``python -m lit_transfer`` and the notebook add all three), and leaving one out
changes the speed, never the result's meaning.

- ``layers.py``: the notebook's layers in a faster form for the CPU (``FastCpuLayers``; ``--speed.fast_cpu_layers``).
- ``feature_cache.py``: a frozen backbone's features computed once, not every epoch (``FeatureCache``;
  ``--speed.feature_cache``).
- ``cuda_graphs.py``: training batches' forward and backward replayed from CUDA graphs (``CudaGraphs``;
  ``--speed.cuda_graphs``).
- ``cpu.py``: process-wide CPU settings (denormals, allocator, threads), applied by the command line at start.
- ``lit_transfer/loader.py`` (beside the DataModule): batches drawn by index from tensors on the device.
"""

from __future__ import annotations

import lightning as L

from lit_transfer.speed.cuda_graphs import CudaGraphs
from lit_transfer.speed.feature_cache import FeatureCache
from lit_transfer.speed.layers import FastCpuLayers


def callbacks(fast_cpu_layers: bool = True, feature_cache: bool = True, cuda_graphs: bool = True) -> list[L.Callback]:
    """The speed pieces as callbacks, for a Trainer's ``callbacks`` (after ``FreezeFeatures``).

    Args:
        fast_cpu_layers: On the CPU, swap in layers that compute the same values and gradients faster.
        feature_cache: While the backbone is frozen, compute its features once per split and train the head on
            them (dropout still applied on the fly); same result, less work.
        cuda_graphs: On one CUDA device with 32-bit precision, replay each full training batch's forward and
            backward as CUDA graphs; elsewhere the usual eager step.
    """
    chosen = {FastCpuLayers: fast_cpu_layers, FeatureCache: feature_cache, CudaGraphs: cuda_graphs}
    return [cls() for cls, on in chosen.items() if on]
