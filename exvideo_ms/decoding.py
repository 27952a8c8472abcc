"""Latents to frames: the temporal VAE decoder run in chunks or in overlapping, blended windows.

Latents are divided by the VAE's ``scale_factor`` (0.18215) first. The decoder's temporal convolutions
zero-pad at the first and last frame of whatever they are given, so how a video is split changes the frames
next to each split:

- chunks of ``chunk`` frames, decoded independently (``chunk = T`` is the original's one-piece decode);
- ExVideo's windows of ``window`` frames every ``stride`` frames, blended with linear ramps (no seam, memory of
  one window whatever the length); ``reflect`` also decodes the overlap mirrored at both ends, so the first
  and last frames are blended from as many windows as every other frame.
"""
from __future__ import annotations

import numpy as np
from mindspore import Tensor, ops
from tqdm.auto import tqdm

from exvideo_ms.diffusion.windows import reflected_order, window_spans, window_weights


def to_frames(decoded: np.ndarray) -> np.ndarray:
    """(T, 3, H, W) decoder output in [-1, 1] -> (T, H, W, 3) in [0, 1]."""
    return np.clip(decoded.transpose(0, 2, 3, 1) / 2.0 + 0.5, 0.0, 1.0)


def decode_chunked(vae, latents: Tensor, scale_factor: float, chunk: int, progress: bool = True) -> np.ndarray:
    """(T, z, h, w) latents -> (T, H, W, 3) float frames in [0, 1], ``chunk`` frames per decoder call."""
    z = latents / scale_factor
    out = []
    for i in tqdm(range(0, z.shape[0], chunk), desc="decoding", disable=not progress):
        part = z[i:i + chunk]
        out.append(vae.decode(part, part.shape[0]).asnumpy())
    return to_frames(np.concatenate(out, 0))


def decode_windowed(vae, latents: Tensor, scale_factor: float, window: int, stride: int, progress: bool = True,
                    reflect: bool = False) -> np.ndarray:
    """(T, z, h, w) latents -> (T, H, W, 3) float frames in [0, 1], decoded in blended overlapping windows."""
    z = latents / scale_factor
    n = z.shape[0]
    pad = min(window - stride, n - 1) if reflect else 0
    if pad:
        z = ops.gather(z, Tensor(np.asarray(reflected_order(n, pad), np.int32)), 0)
    t = z.shape[0]
    acc, weight = None, np.zeros((t, 1, 1, 1), np.float64)
    for start, end in tqdm(window_spans(t, window, stride), desc="decoding", disable=not progress):
        part = vae.decode(z[start:end], end - start).asnumpy().astype(np.float64)
        w = window_weights(start, end, t, window).reshape(-1, 1, 1, 1)
        if acc is None:
            acc = np.zeros((t,) + part.shape[1:], np.float64)
        acc[start:end] += part * w
        weight[start:end] += w
    frames = to_frames((acc / weight).astype(np.float32))
    return frames[pad:t - pad] if pad else frames
