"""Every speed trick in one place, each in a file that says why it exists (figures: benchmarks/RESULTS.md).

- ``cpu.py``: process-wide CPU settings (denormals, allocator, threads), applied by the command line.
- ``layers.py``: the notebook's layers in a faster form for the CPU, swapped in by ``TransferModule.setup``.
- ``feature_cache.py``: a frozen backbone's features computed once, not every epoch (``--model.cache_features``).
- ``cuda_graphs.py``, ``step_graph.py``: training steps replayed from CUDA graphs (``--model.cuda_graph``,
  ``--model.graph_whole_step``); ``epoch_sums.py``: training metrics a graph can update.
- ``lit_transfer/loader.py`` (beside the DataModule): batches drawn by index from tensors on the device.
"""
