"""``predict --data.predict_path P``: the image files to predict, found from a file, a folder or a glob."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from torch import Tensor

from lit_transfer.errors import UserError
from lit_transfer.images.folders import EXTENSIONS, decode_files, is_image


def find_images(pattern: str) -> list[str]:
    """The files ``pattern`` names: the file itself, a folder's images (recursively, hidden ones left out, sorted),
    or whatever a glob matches (``**`` included; every file, so a typo shows up as an unreadable row)."""
    path = Path(pattern).expanduser()
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        files = sorted(
            str(p)
            for p in path.rglob("*")
            if p.is_file() and is_image(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise UserError(
                f"{path} holds no images ({', '.join(EXTENSIONS)}): point --data.predict_path at an image file, "
                "a folder of images or a glob such as 'scans/*.png'"
            )
        return files
    files = sorted(f for f in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(f))
    if not files:
        raise UserError(
            f"--data.predict_path {pattern} is no file or folder and matches no file: pass an image file, a folder "
            "of images or a glob such as 'scans/*.png' (quoted, so the shell leaves it to lit_transfer)"
        )
    return files


def read_images(files: list[str]) -> tuple[Tensor, dict[int, str]]:
    """The readable files' images by the image rule, in order, and for each unreadable file (its position in
    ``files``) the reason: one bad file is a row in predictions.csv, not the end of the run."""
    images, failed = decode_files(files)
    keep = [i for i in range(len(files)) if i not in failed]
    reasons = {i: why.removeprefix(f"{files[i]}: ").removeprefix(f"{files[i]} is ") for i, why in failed.items()}
    return images[keep], reasons
