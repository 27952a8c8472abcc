"""Overlapping temporal windows and their blend weights (ExVideo's windowed decoding; DiffSynth's temporal tile
masks restricted to time): pure functions of frame counts."""
import numpy as np


def window_spans(total: int, window: int, stride: int):
    """Temporal windows [start, end): starts 0, stride, 2·stride, ... until a window reaches the end."""
    spans = []
    for start in range(0, total, stride):
        if spans and spans[-1][1] >= total:
            break
        spans.append((start, min(start + window, total)))
    return spans


def window_weights(start: int, end: int, total: int, window: int) -> np.ndarray:
    """Blend weights of one window: a linear ramp 1, 2, ... towards each side that overlaps another window,
    flat at the video's own first and last frame (DiffSynth's mask restricted to time)."""
    t = np.arange(end - start, dtype=np.float64)
    front = t + 1 if start > 0 else np.full_like(t, np.inf)
    back = (end - start) - t if end < total else np.full_like(t, np.inf)
    return np.minimum(np.minimum(front, back), window)


def reflected_order(total: int, pad: int):
    """Frame indices of a sequence mirrored by ``pad`` frames at both ends: pad..1, 0..total−1, total−2..."""
    return list(range(pad, 0, -1)) + list(range(total)) + list(range(total - 2, total - 2 - pad, -1))
