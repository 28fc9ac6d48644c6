"""REFERENCE, not lit_transfer: the experiment as a plain PyTorch loop with the data preloaded as tensors.

What a careful user writes by hand: same model, batch 128, 5 epochs per stage, Adadelta(1.0, 0.95, 1e-7), the
backbone frozen in stage two, the head kept. ``--ftz`` flushes denormal floats to zero (the issue's third row).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import DATA_DIR, REVERSE, STAGES, emit, mnist, notebook_cnn, peak_gpu_mb, peak_rss_mb, split_indices


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", default=DATA_DIR)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--val_size", type=float, default=0.1)
    p.add_argument("--ftz", action="store_true")
    p.add_argument("--reverse", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    if args.ftz:
        torch.set_flush_denormal(True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train, test = mnist(args.data_dir, True), mnist(args.data_dir, False)
    features = classifier = None
    for stage, digits in REVERSE if args.reverse else STAGES:
        lookup = torch.full((10,), -1, dtype=torch.long)
        lookup[digits] = torch.arange(5)
        idx = split_indices(train.targets, digits, args.val_size, args.seed)
        x = (train.data[idx].float() / 255).unsqueeze(1).to(device)
        y = lookup[train.targets[idx]].to(device)
        if features is None:
            features, classifier = (m.to(device) for m in notebook_cnn(5))
        else:
            features.requires_grad_(False)  # stage two: frozen features, the head keeps its weights
        params = [p for m in (features, classifier) for p in m.parameters() if p.requires_grad]
        opt = torch.optim.Adadelta(params, lr=1.0, rho=0.95, eps=1e-7)
        features.train(), classifier.train()
        start = time.perf_counter()
        for _ in range(args.epochs):
            for batch in torch.randperm(len(y), device=device).split(128):
                loss = F.cross_entropy(classifier(features(x[batch])), y[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        keep = torch.isin(test.targets, torch.tensor(digits))
        tx = (test.data[keep].float() / 255).unsqueeze(1).to(device)
        ty = lookup[test.targets[keep]].to(device)
        features.eval(), classifier.eval()
        with torch.no_grad():
            logits = torch.cat([classifier(features(c)) for c in tx.split(1024)])
        emit(
            {
                "impl": "plain PyTorch loop" + (" + FTZ" if args.ftz else ""),
                "stage": stage,
                "train_time_s": seconds,
                "images_per_s": args.epochs * len(y) / seconds,
                "test_acc": (logits.argmax(1) == ty).float().mean().item(),
                "peak_rss_mb": peak_rss_mb(),
                "peak_gpu_mb": peak_gpu_mb(),
            }
        )


if __name__ == "__main__":
    main()
