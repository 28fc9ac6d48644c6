"""Image folders as a dataset: torchvision's ``ImageFolder`` layout, decoded once by the image rule, then cached.

``<data_dir>/train/<class>/<image>`` and, where present, ``<data_dir>/test/<class>/<image>``. Each image becomes the
network's 28x28 input by ``lit_transfer/images/rule.py``; a split is decoded once and kept as one uint8 tensor file in a
cache folder, keyed by the split's file list, sizes and modification times, so the next run starts training without
decoding and a changed folder is decoded again. The decoded images then take the same on-device batch path as the IDX
datasets (``lit_transfer/data/loader.py``). torchvision's ``make_dataset`` lists the files; its ``ImageFolder`` itself
is not used because it decodes an image each time it is indexed, every epoch, where these images are decoded once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchvision.datasets.folder import make_dataset

from lit_transfer.errors import UserError, count
from lit_transfer.files import atomic_write
from lit_transfer.images.rule import SIZE, load_mnist

# What Pillow decodes (torchvision's IMG_EXTENSIONS lacks GIF)
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
RULE = 1  # version of the image rule in rule.py: raise it when the rule changes, so every cache is decoded again


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lit_transfer``, else ``~/.cache/lit_transfer``: never the user's data folder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lit_transfer"


def is_image(path: str | os.PathLike) -> bool:
    """An image by its name: a known extension, and not hidden (macOS leaves ``._name.png`` files beside images)."""
    name = os.path.basename(path)
    return name.lower().endswith(EXTENSIONS) and not name.startswith(".")


def relative(files: Sequence[str], root: Path) -> list[str]:
    """Each file's path within ``root`` (``make_dataset`` joins them onto it; ``os.path.relpath`` took 1.9 s for
    120,000 calls)."""
    prefix = os.path.join(str(root), "")
    return [f.removeprefix(prefix) for f in files]


def class_folders(folder: Path) -> list[str]:
    """The class folders, sorted. torchvision's ``find_classes`` would also count hidden folders
    (``.ipynb_checkpoints``, ``.git``) as classes, so this lists them itself."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def decode_files(paths: Sequence[str]) -> tuple[Tensor, dict[int, str]]:
    """Each file by the image rule: uint8 ``(N, 28, 28)`` (zeros where a file failed) and ``{position: why}``.

    In this process: 60,000 28x28 PNGs take ~3 s. Worker processes did not pay on 2 cores (benchmarks/RESULTS.md,
    "Image folders"): spawned ones spent longer importing torch than decoding, and forked ones can hang (a child
    of a process whose OpenMP threads run hung in ``torch.set_num_threads``).
    """
    images = torch.zeros(len(paths), SIZE, SIZE, dtype=torch.uint8)
    failed = {}
    threads = torch.get_num_threads()
    # Each image's tensors are tiny: torch's worker threads only add waits, which made decoding 10x slower while the
    # other core was busy (500 112x112 JPEGs: 3-5 s with 2 threads, 0.2-0.4 s with 1; 2026-12-01, shared machine).
    torch.set_num_threads(1)
    try:
        for i, path in enumerate(paths):
            try:
                images[i] = load_mnist(path)
            except UserError as err:
                failed[i] = str(err)
    finally:
        torch.set_num_threads(threads)
    return images, failed


def cached_decode(files: Sequence[str], root: Path, cache_dir: Path) -> Tensor:
    """``files`` (under ``root``) decoded, from the cache when the same files with the same sizes and modification
    times were decoded before; otherwise decoded now and cached. The first unreadable file is a ``UserError``."""
    stats = [os.stat(f) for f in files]
    listing = [[name, s.st_size, s.st_mtime_ns] for name, s in zip(relative(files, root), stats, strict=True)]
    key = hashlib.sha256(json.dumps([RULE, listing]).encode()).hexdigest()
    path = cache_dir / f"{root.parent.name}-{root.name}-{key[:24]}.pt"  # named for people; the key decides
    if path.is_file():
        try:
            cached = torch.load(path, weights_only=True)
            if cached["key"] == key and cached["images"].shape == (len(files), SIZE, SIZE):
                rank_zero_info(f"lit_transfer: {count(len(files), 'image')} of {root} read from the cache {path}")
                return cached["images"]
        except Exception:  # a damaged or foreign cache file: decode again and replace it
            pass
    start = time.perf_counter()
    images, failed = decode_files(files)
    if failed:
        more = f" (and {count(len(failed) - 1, 'more unreadable file')})" if len(failed) > 1 else ""
        raise UserError(failed[min(failed)] + more)
    seconds = time.perf_counter() - start
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save({"key": key, "images": images}, f))  # no half-written cache
    except OSError as err:
        why = f"cannot write the image cache {path} ({err.strerror})"
        raise UserError(f"{why}: pass a writable --data.cache_dir") from None
    rank_zero_info(f"lit_transfer: decoded {count(len(files), 'image')} of {root} in {seconds:.1f} s, cached in {path}")
    return images


class ImageFolderData:
    """An image folder's classes and splits, checked; the images of a split decoded on demand (cached)."""

    def __init__(self, data_dir: str, classes: list[str] | None, cache_dir: str | None, test_size: float) -> None:
        self.root, self.chosen, self.test_size = Path(data_dir), classes, test_size
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._images: dict[str, Tensor] = {}

    @cached_property
    def class_names(self) -> list[str]:
        """The chosen classes in label order: ``classes`` as given (checked against the folder when it is read, so
        that predict on files needs no folder), else every class folder in ``train/``."""
        if self.chosen is None:
            return self._classes(self.train_dir)
        if not self.chosen:
            raise UserError("--data.classes is empty: name at least one class folder, or leave it unset for all")
        if repeated := sorted({c for c in self.chosen if self.chosen.count(c) > 1}):
            raise UserError(f"--data.classes repeats {repeated}: list each class once")
        return list(self.chosen)

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def test_dir(self) -> Path | None:
        return self.root / "test" if (self.root / "test").is_dir() else None

    def _classes(self, folder: Path) -> list[str]:
        if not self.root.is_dir():
            raise UserError(
                f"image folder {self.root} does not exist: point --data.data_dir at the folder that holds "
                "train/<class>/<image> (see docs/own-data.md)"
            )
        if not folder.is_dir():
            if class_folders(self.root) and folder.name == "train":
                raise UserError(
                    f"{self.root} has no train/ folder but holds class folders: move them into {folder}/ "
                    f"(the layout is {folder}/<class>/<image>)"
                )
            raise UserError(f"{self.root} has no {folder.name}/ folder: lay the images out as {folder}/<class>/<image>")
        if not (found := class_folders(folder)):
            raise UserError(
                f"{folder} holds no class folders: put each class's images into its own folder, {folder}/<class>/"
            )
        return found

    @cached_property
    def files(self) -> dict[str, tuple[list[str], Tensor]]:
        """Per split, the image files of the chosen classes and their labels, ordered by file name (then class):
        a folder written from an IDX file with numbered names keeps the file's order, so the seeded validation split
        and shuffling pick the same images as from the IDX file itself."""
        names = self.class_names
        if self.chosen is not None:
            found = self._classes(self.train_dir)
            if missing := [c for c in names if c not in found]:
                raise UserError(
                    f"class {missing[0]!r} (--data.classes) is not a folder in {self.train_dir}: "
                    f"choose from {', '.join(found)}"
                )
        listed = {"train": self._list(self.train_dir, names)}
        if self.test_dir is not None:
            test_classes = self._classes(self.test_dir)
            differ = set(names) - set(test_classes) if self.chosen else set(names) ^ set(test_classes)
            if differ:
                only_train = sorted(set(names) - set(test_classes))
                only_test = sorted(set(test_classes) - set(names))
                raise UserError(
                    f"{self.train_dir} and {self.test_dir} hold different classes (only in train: "
                    f"{', '.join(only_train) or '-'}; only in test: {', '.join(only_test) or '-'}): "
                    "give both the same class folders"
                )
            listed["test"] = self._list(self.test_dir, names)
        return listed

    @staticmethod
    def _list(folder: Path, names: list[str]) -> tuple[list[str], Tensor]:
        found = make_dataset(str(folder), {c: i for i, c in enumerate(names)}, is_valid_file=is_image, allow_empty=True)
        found.sort(key=lambda item: (os.path.basename(item[0]), item[1]))
        counts = torch.bincount(torch.tensor([label for _, label in found], dtype=torch.long), minlength=len(names))
        if (empty := (counts == 0).nonzero()).numel():
            raise UserError(
                f"class folder {folder / names[empty[0].item()]} holds no images ({', '.join(EXTENSIONS)}): add "
                "images or leave the class out (--data.classes)"
            )
        return [path for path, _ in found], torch.tensor([label for _, label in found], dtype=torch.long)

    @cached_property
    def held_out(self) -> Tensor:
        return held_out(*self.files["train"], self.test_size, self.train_dir)

    def decoded(self, which: str) -> Tensor:
        """All images of ``train/`` or ``test/``, decoded (and cached) once per process."""
        if which not in self._images:
            folder = self.train_dir if which == "train" else self.test_dir
            self._images[which] = cached_decode(self.files[which][0], folder, self.cache_dir)
        return self._images[which]

    def prepare(self) -> None:
        """Check the folder and fill the cache (under DDP, rank 0 does it before the other processes start)."""
        for which in self.files:
            self.decoded(which)

    def read(self, split: str) -> tuple[Tensor, Tensor, list[str]]:
        """A split's images, labels and files. Without ``test/``, a fixed share of each class of ``train/`` is the
        test split (the same images in every run: see ``held_out``) and the rest is the training split."""
        if split == "test" and "test" in self.files:
            files, labels = self.files["test"]
            return self.decoded("test"), labels, files
        files, labels = self.files["train"]
        test = self.held_out if "test" not in self.files else None
        keep = torch.ones(len(files), dtype=torch.bool) if test is None else test if split == "test" else ~test
        index = keep.nonzero().squeeze(1)
        return self.decoded("train")[index], labels[index], [files[i] for i in index.tolist()]


def held_out(files: Sequence[str], labels: Tensor, share: float, root: Path) -> Tensor:
    """Which files are the test split: per class ``round(share * n)`` of its ``n`` images (at least one, and at
    least one left to train on, where a class has two or more), the first in an order fixed by a hash of each path
    within ``root``. Stratified and independent of ``--data.seed``; a file added later moves few others."""
    names = relative(files, root)
    members: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist()):
        members.setdefault(label, []).append(i)
    chosen = []
    for group in members.values():
        order = sorted(group, key=lambda i: hashlib.sha256(names[i].encode()).hexdigest())
        n = len(order)
        chosen += order[: min(max(round(share * n), 1), n - 1) if n >= 2 else 0]
    test = torch.zeros(len(files), dtype=torch.bool)
    test[chosen] = True
    return test
