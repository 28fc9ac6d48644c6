"""What makes the same training faster, none of it changing a result (figures: benchmarks/RESULTS.md).

- ``layers.py``: the dropout and flatten layers in a faster CPU form, which ``model.py`` uses, and why the order
  ``model.py`` writes its layers in computes what Keras' order computes.
- ``cpu.py``: process-wide CPU settings (denormals, allocator, threads), applied by the entry point at start.

The other speed path is visible where it acts: a frozen backbone's features computed once and served by the loader
in place of the images (``lit_transfer/callbacks/feature_cache.py``, ``--speed.feature_cache false`` turns it off),
and the training step asks for the logits of what it is given (``TransferModule.logits``).
"""
