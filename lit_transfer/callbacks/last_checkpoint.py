"""``LastCheckpoint``: Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` always ends with the final weights.

With ``save_last=True`` and ``every_n_train_steps=N``, Lightning 2.6 rewrites ``last.ckpt`` every N steps and,
at the end of training, only if it never wrote one: a run of 1,035 steps (stage one on MNIST's 5-9) left the
weights of step 1,000 in ``last.ckpt``, and the next stage transferred from those instead of the weights it had
just tested. Here the end of training always writes it (unless step N already did), as the docs of ``save_last``
promise ("a copy of the last checkpoint saved"); tests/test_resume.py checks it.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with the same options (``--last_checkpoint.*``); ``last.ckpt`` holds the final weights."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):  # skipped: step N just saved
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @property
    def state_key(self) -> str:
        # The key ModelCheckpoint's state has in every checkpoint: resuming older runs restores it as before.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)
