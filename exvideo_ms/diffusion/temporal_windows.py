"""Videos longer than the model's frames: every denoiser evaluation runs the UNet on overlapping temporal
windows of at most the trained length and blends their x0 estimates with the linear ramps of windowed decoding
(``windows.window_weights``), as DiffSynth's ``SVDUNet.tiled_forward`` blends its 25-frame windows; and
FreeNoise's noise rescheduling (Qiu et al. 2023, arXiv 2310.15169, §3.2), which makes distant windows start
from shuffled copies of the same noise frames so that they stay coherent. Pure functions of frame counts and
arrays; the pipeline builds each window's denoiser (its conditioning rows and per-frame guidance scales are the
whole video's rows for those frames).
"""
from typing import Callable, List, Sequence, Tuple

import numpy as np

from exvideo_ms.diffusion.windows import window_weights


def temporal_spans(total: int, window: int, stride: int) -> List[Tuple[int, int]]:
    """Windows [start, end) of ``window`` frames (the whole video if shorter), starts 0, stride, 2·stride, ...;
    the last one is moved back to end at the last frame, so every window has the same length (one compiled
    graph) and no window is a short tail."""
    if window < 1 or stride < 1 or stride > window:
        raise ValueError(f"temporal windows need 1 <= stride <= window, got window {window}, stride {stride}")
    if total <= window:
        return [(0, total)]
    spans = []
    for start in range(0, total - window + stride, stride):
        start = min(start, total - window)
        if spans and spans[-1][0] == start:
            break
        spans.append((start, start + window))
    return spans


def blend_weights(spans: Sequence[Tuple[int, int]], total: int) -> List[np.ndarray]:
    """Per-window (end − start,) float32 weights that sum to one at every frame: the ramps of
    ``window_weights`` (rising from each side that overlaps another window) divided by their sum."""
    window = max(e - s for s, e in spans)
    raw = [window_weights(s, e, total, window) for s, e in spans]
    norm = np.zeros(total, np.float64)
    for (s, e), w in zip(spans, raw):
        norm[s:e] += w
    if np.any(norm <= 0):
        raise ValueError(f"the windows {list(spans)} leave frames of a {total}-frame video out")
    return [(w / norm[s:e]).astype(np.float32) for (s, e), w in zip(spans, raw)]


def windowed_denoiser(window_denoiser: Callable[[int, int], Callable], spans: Sequence[Tuple[int, int]],
                      total: int) -> Callable:
    """D(x; σ) of a ``total``-frame video x (T, C, h, w) from ``window_denoiser(start, end)``, the denoiser of
    those frames alone: each window's estimate weighted by ``blend_weights``, summed. One window covering the
    video is that window's denoiser itself."""
    from mindspore import Tensor  # here: the span and weight functions serve PyTorch's side of the benchmarks too
    if len(spans) == 1 and spans[0] == (0, total):
        return window_denoiser(0, total)
    denoisers = [window_denoiser(s, e) for s, e in spans]
    weights = [w.reshape(-1, 1, 1, 1) for w in blend_weights(spans, total)]

    def denoise(x, sigma: float):
        out = None
        for (s, e), d, w in zip(spans, denoisers, weights):
            part = d(x[s:e], sigma).asnumpy()
            if out is None:
                out = np.zeros((total,) + part.shape[1:], np.float32)
            out[s:e] += w * part
        return Tensor(out)

    return denoise


def reschedule_noise(noise: np.ndarray, window: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """FreeNoise's noise rescheduling: the first ``window`` frames keep their noise; each later block of
    ``stride`` frames takes the noise of the block ``window`` frames earlier, in a random order (a window-local
    shuffle). Every frame's noise is still one standard normal draw; deterministic under ``rng``."""
    out = np.array(noise, copy=True)
    for start in range(window, len(out), stride):
        end = min(start + stride, len(out))
        src = np.arange(start - window, start - window + (end - start))
        out[start:end] = out[rng.permutation(src)]
    return out
