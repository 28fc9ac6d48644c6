"""The command line's helpers, around ``lit_transfer/cli.py`` (the entry point, ``TransferCLI``).

- ``help.py``: ``--help`` short and first (the project's own options), ``--help-all`` for LightningCLI's whole help.
- ``parse_errors.py``: a parse error as one line with a "did you mean".
- ``options.py``: ``--freeze.*`` merged into the callbacks, the refused top-level ``--optimizer``.
- ``evaluation.py``: ``test``/``validate``/``predict`` on the checkpoint's own classes.
- ``run_dirs.py``: one run folder per command, every logger in it, no checkpoint overwritten.
- ``setup_check.py``: ``--version``, and the torch/torchvision check run before every command.
- ``precision.py``: the note on bf16-mixed at the start of a CPU run, from a timed probe cached per machine.
- ``console.py``: the library messages that are noise for this program, silenced.

A new command-line error is a ``UserError`` raised where the bad value is first seen (a DataModule's or the
module's ``__init__`` for a setting, ``parse_errors.py`` for the parser's own), with a test in tests/test_errors.py.
"""
