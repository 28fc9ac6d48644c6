"""``python -m lit_transfer export``: a checkpoint as a file that runs without lit_transfer (``formats.py``).

torch.export (``.pt2``), ONNX, safetensors (with a JSON of classes, input rule and architecture) and TorchScript; the
class names and the input rule travel inside each file. A new format is a ``write_<format>`` function there, its
name in ``Format`` and ``SUFFIX``, and a round-trip test in tests/test_export.py.
"""

from lit_transfer.export.formats import export, load_safetensors, main, probabilities_model

__all__ = ["export", "load_safetensors", "main", "probabilities_model"]
