"""Per-frame object label maps of a dataset (``masks/<clip>.npz``, written by scripts/make_synthetic_dataset.py)
and the share of object pixels under each latent pixel, which the object-weighted loss reads
(``--train.loss.object_weight``, train/loss.py)."""
from pathlib import Path
from typing import Union

import numpy as np

from exvideo_ms.data.sources import DatasetError
from exvideo_ms.data.transforms import resize_crop


def mask_path(root: Union[str, Path], clip: Union[str, Path]) -> Path:
    """The label-map file of ``clip`` (a path in the dataset, relative or not): ``<root>/masks/<clip stem>.npz``."""
    return Path(root) / "masks" / (Path(clip).stem + ".npz")


def read_labels(root: Union[str, Path], clip: Union[str, Path]) -> np.ndarray:
    """(T, H, W) uint8 labels of ``clip``: 0 background, k the k-th object. Raises DatasetError naming the file."""
    path = mask_path(root, clip)
    if not path.is_file():
        raise DatasetError(f"{path}: no object masks for {clip} (scripts/make_synthetic_dataset.py writes them)")
    try:
        with np.load(path) as z:
            labels = z["labels"]
    except (OSError, KeyError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable object masks, expected an npz with a (T, H, W) 'labels' array ({e})")
    if labels.ndim != 3:
        raise DatasetError(f"{path}: labels of shape {labels.shape}, expected (T, H, W)")
    return labels


def object_fraction(labels: np.ndarray, height: int, width: int, factor: int) -> np.ndarray:
    """(T, H, W) labels -> (T, height // factor, width // factor) float32 in [0, 1]: the object pixels' share of
    each factor × factor block, after the frames' own resize and centre crop (``resize_crop``) to height × width."""
    if height % factor or width % factor:
        raise ValueError(f"frames of {height}x{width} do not tile into latent pixels of {factor}x{factor}")
    masks = np.repeat(((labels > 0) * np.uint8(255))[..., None], 3, axis=-1)
    frames = np.stack([resize_crop(m, height, width)[..., 0] for m in masks]).astype(np.float32) / 255.0
    t = len(frames)
    return frames.reshape(t, height // factor, factor, width // factor, factor).mean(axis=(2, 4))
