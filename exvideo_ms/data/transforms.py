"""Frame sampling and the per-frame transform of ExVideo's training data (reference/exvideo.md §6.3):
resize the shorter side (antialiased) so the frame covers height×width, centre-crop, scale to [-1, 1]."""
from typing import Optional

import numpy as np


def frame_indices(total: int, num_frames: int, interval: int, start: Optional[int]):
    """``num_frames`` indices ``start, start+interval, ...`` within ``total`` frames; None if too short."""
    span = (num_frames - 1) * interval + 1
    if total < span:
        return None
    start = 0 if start is None else start
    if start + span > total:
        return None
    return list(range(start, start + span, interval))


def resize_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8: scale so both sides cover the target (shorter side to
    fit), area/Lanczos-style antialiasing via PIL, then a centre crop."""
    from PIL import Image
    h, w = frame.shape[:2]
    scale = max(height / h, width / w)
    nh, nw = max(height, int(round(h * scale))), max(width, int(round(w * scale)))
    img = Image.fromarray(frame)
    if (nh, nw) != (h, w):
        img = img.resize((nw, nh), Image.LANCZOS)
    top, left = (nh - height) // 2, (nw - width) // 2
    return np.asarray(img.crop((left, top, left + width, top + height)), dtype=np.uint8)
