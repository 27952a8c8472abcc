"""Latents to frames: the temporal VAE decoder run in chunks or in overlapping, blended windows.

Latents are divided by the VAE's ``scale_factor`` (0.18215) first. The decoder's temporal convolutions
zero-pad at the first and last frame of whatever they are given, so how a video is split changes the frames
next to each split:

- chunks of ``chunk`` frames, decoded independently (``chunk = T`` is the original's one-piece decode);
- ExVideo's windows of ``window`` frames every ``stride`` frames, blended with linear ramps (no seam, memory of
  one window whatever the length); ``reflect`` also decodes the overlap mirrored at both ends, so the first
  and last frames are blended from as many windows as every other frame.

``iter_decode_chunked`` and ``iter_decode_windowed`` yield the frames in order as soon as no later chunk or
window touches them, holding at most one window's frames: a video of any length streams to a writer in the
memory of one window (``decode_chunked``/``decode_windowed`` are their concatenations).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from mindspore import Tensor, ops
from tqdm.auto import tqdm

from exvideo_ms.diffusion.windows import reflected_order, window_spans, window_weights


def to_frames(decoded: np.ndarray) -> np.ndarray:
    """(T, 3, H, W) decoder output in [-1, 1] -> (T, H, W, 3) in [0, 1]."""
    return np.clip(decoded.transpose(0, 2, 3, 1) / 2.0 + 0.5, 0.0, 1.0)


def iter_decode_chunked(vae, latents: Tensor, scale_factor: float, chunk: int,
                        progress: bool = True) -> Iterator[np.ndarray]:
    """(T, z, h, w) latents -> (n, H, W, 3) float frame blocks in [0, 1], ``chunk`` frames per decoder call."""
    z = latents / scale_factor
    for i in tqdm(range(0, z.shape[0], chunk), desc="decoding", disable=not progress):
        part = z[i:i + chunk]
        yield to_frames(vae.decode(part, part.shape[0]).asnumpy())


def decode_chunked(vae, latents: Tensor, scale_factor: float, chunk: int, progress: bool = True) -> np.ndarray:
    """(T, z, h, w) latents -> (T, H, W, 3) float frames in [0, 1], ``chunk`` frames per decoder call."""
    return np.concatenate(list(iter_decode_chunked(vae, latents, scale_factor, chunk, progress)), 0)


def iter_decode_windowed(vae, latents: Tensor, scale_factor: float, window: int, stride: int, progress: bool = True,
                         reflect: bool = False) -> Iterator[np.ndarray]:
    """(T, z, h, w) latents -> (n, H, W, 3) float frame blocks in [0, 1], decoded in blended overlapping windows:
    after each window, the frames before the next window's start are final and are yielded (and dropped)."""
    z = latents / scale_factor
    n = z.shape[0]
    pad = min(window - stride, n - 1) if reflect else 0
    if pad:
        z = ops.gather(z, Tensor(np.asarray(reflected_order(n, pad), np.int32)), 0)
    t = z.shape[0]
    spans = window_spans(t, window, stride)
    lo, acc, weight = 0, None, None  # acc/weight hold the frames [lo, lo + len(acc)) not yet yielded
    for i, (start, end) in enumerate(tqdm(spans, desc="decoding", disable=not progress)):
        part = vae.decode(z[start:end], end - start).asnumpy().astype(np.float64)
        w = window_weights(start, end, t, window).reshape(-1, 1, 1, 1)
        if acc is None:
            acc, weight = np.zeros((0,) + part.shape[1:], np.float64), np.zeros((0, 1, 1, 1), np.float64)
        grow = end - lo - len(acc)
        if grow > 0:
            acc = np.concatenate([acc, np.zeros((grow,) + acc.shape[1:], np.float64)])
            weight = np.concatenate([weight, np.zeros((grow, 1, 1, 1), np.float64)])
        acc[start - lo:end - lo] += part * w
        weight[start - lo:end - lo] += w
        done = spans[i + 1][0] if i + 1 < len(spans) else t
        if done > lo:
            frames = to_frames((acc[:done - lo] / weight[:done - lo]).astype(np.float32))
            first, last = max(lo, pad), min(done, t - pad)  # the mirrored frames are not the video's
            if last > first:
                yield frames[first - lo:last - lo]
            acc, weight, lo = acc[done - lo:], weight[done - lo:], done


def decode_windowed(vae, latents: Tensor, scale_factor: float, window: int, stride: int, progress: bool = True,
                    reflect: bool = False) -> np.ndarray:
    """(T, z, h, w) latents -> (T, H, W, 3) float frames in [0, 1], decoded in blended overlapping windows."""
    return np.concatenate(list(iter_decode_windowed(vae, latents, scale_factor, window, stride, progress, reflect)), 0)
