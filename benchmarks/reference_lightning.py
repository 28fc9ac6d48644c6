"""REFERENCE, not lit_transfer: a typical Lightning script. torchvision MNIST through a DataLoader (PIL and
ToTensor per image, worker processes), a LightningModule, Trainer defaults, timed around ``trainer.fit``."""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import lightning as L
import torch
import torch.nn.functional as F
from common import DATA_DIR, REVERSE, STAGES, emit, notebook_cnn, peak_gpu_mb, peak_rss_mb, split_indices
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.features, self.classifier = notebook_cnn(5)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.classifier(self.features(x)), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adadelta(params, lr=1.0, rho=0.95, eps=1e-7)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", default=DATA_DIR)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--val_size", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--reverse", action="store_true")
    args = p.parse_args()
    L.seed_everything(0)
    model = Net()
    for stage, digits in REVERSE if args.reverse else STAGES:
        remap = {d: i for i, d in enumerate(digits)}
        tf = transforms.ToTensor()
        train = datasets.MNIST(args.data_dir, train=True, transform=tf, target_transform=remap.get)
        test = datasets.MNIST(args.data_dir, train=False, transform=tf, target_transform=remap.get)
        train = Subset(train, split_indices(train.targets, digits, args.val_size, 0).tolist())
        test = Subset(test, torch.isin(test.targets, torch.tensor(digits)).nonzero().squeeze(1).tolist())
        loader = DataLoader(train, batch_size=128, shuffle=True, num_workers=args.workers, persistent_workers=True)
        if stage == "stage_two":
            model.features.requires_grad_(False)
        # Trainer defaults (logger, checkpoints) as a typical script has them; only the progress bar is off.
        trainer = L.Trainer(max_epochs=args.epochs, enable_progress_bar=False, default_root_dir=tempfile.mkdtemp())
        start = time.perf_counter()
        trainer.fit(model, loader)
        seconds = time.perf_counter() - start
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in DataLoader(test, batch_size=1024, num_workers=args.workers):
                correct += (model.classifier(model.features(x.to(model.device))).argmax(1).cpu() == y).sum().item()
        emit(
            {
                "impl": "typical Lightning + DataLoader script",
                "stage": stage,
                "train_time_s": seconds,
                "images_per_s": args.epochs * len(train) / seconds,
                "test_acc": correct / len(test),
                "peak_rss_mb": peak_rss_mb(),
                "peak_gpu_mb": peak_gpu_mb(),
            }
        )


if __name__ == "__main__":
    main()
