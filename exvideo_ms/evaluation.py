"""Measurements of a model on held-out data: the denoising loss at fixed noise levels, and simple statistics
of videos (first-frame PSNR, frame-to-frame motion, drift from the first frame)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from mindspore import Tensor

# noise levels of the held-out denoising loss: the EDM range from nearly clean to the sampler's largest steps
EVAL_SIGMAS = (0.02, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def denoising_loss(unet, addition_time_embed_dim: int, latents: np.ndarray, clip_embeddings: np.ndarray,
                   fps: float, motion_bucket_id: float, encode_scale: float, sigmas: Sequence[float] = EVAL_SIGMAS,
                   seed: int = 0) -> float:
    """Mean x0-space MSE of the v-prediction denoiser (diffusion.denoiser.denoise) over held-out clips ×
    ``sigmas`` (the same noise for every model compared). latents (N, T, C, h, w) × encode scale; clip_embeddings
    (N, 1, D) of each first frame; the condition is each clip's clean first latent."""
    from mindspore import ops

    from exvideo_ms.diffusion.denoiser import denoise
    from exvideo_ms.models.conditioner import added_time_ids, added_time_vector, repeat_frames
    rng = np.random.default_rng(seed)
    n = len(sigmas)
    sig = Tensor(np.asarray(sigmas, np.float32).reshape(n, 1, 1, 1))
    vector = added_time_vector(Tensor(np.repeat(added_time_ids(fps, motion_bucket_id, 0.0)[None], n, 0)),
                               addition_time_embed_dim)
    total = []
    for clip, emb in zip(latents, clip_embeddings):
        t = clip.shape[0]
        noise = rng.standard_normal((n,) + clip.shape).astype(np.float32)
        x0 = np.repeat(clip[None].astype(np.float32), n, 0)
        x = Tensor((x0 + np.asarray(sigmas, np.float32).reshape(n, 1, 1, 1, 1) * noise).reshape((n * t,) + clip.shape[1:]))
        rep = lambda a: repeat_frames(Tensor(np.repeat(a[None].astype(np.float32), n, 0)), t)  # noqa: E731
        pred = denoise(unet, x, repeat_frames(sig, t), rep(clip[0] / encode_scale), rep(emb),
                       repeat_frames(vector, t), t, log=ops.log)
        total.append(float(((pred.asnumpy().reshape(x0.shape) - x0) ** 2).mean()))
    return float(np.mean(total))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB between two images of the same range (uint8 by default)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak ** 2 / mse))


def motion(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames, frames (T, H, W, 3) uint8, on a 0..255 scale."""
    f = frames.astype(np.float64)
    return float(np.abs(f[1:] - f[:-1]).mean())


def drift(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference of every frame to the first, (T,), on a 0..255 scale."""
    f = frames.astype(np.float64)
    return np.abs(f - f[:1]).mean(axis=(1, 2, 3))


def heldout_conditioning(model, cfg, root: Union[str, Path], frames: int, clips: int, size: int):
    """Scaled latents (N, T, C, h, w) and first-frame CLIP embeddings (N, 1, D) of the first ``clips`` clips
    of a dataset folder (metadata.json), encoded by the model's own VAE and image encoder, from frame 0."""
    from exvideo_ms.data.dataset import DataOptions, VideoClipSource
    from exvideo_ms.models.conditioner import Conditioner
    src = VideoClipSource(DataOptions(path=str(root), num_frames=frames, start="fixed", height=size, width=size,
                                      fps=float(cfg.sampling.fps), num_workers=0), seed=0)
    cond = Conditioner(model.vae, model.image_encoder, cfg)
    lat, emb = [], []
    for clip in src.clips[:clips]:
        x, _, _ = src.load(clip, np.random.default_rng(0))
        lat.append(cond.latents(x).asnumpy())
        emb.append(cond.clip_embedding(x[:1]).asnumpy()[0])
    return np.stack(lat), np.stack(emb)


def data_ranges(root: Union[str, Path], frames: int) -> dict:
    """Motion (min, max over clips) and per-frame drift (min and max over clips) of the first ``frames`` frames
    of every clip of a dataset folder: the ranges generated videos are held to."""
    from exvideo_ms.media import read_video
    root = Path(root)
    motions, drifts = [], []
    for item in json.loads((root / "metadata.json").read_text()):
        v = read_video(root / item["path"], count=frames)
        motions.append(motion(v))
        drifts.append(drift(v))
    return {"motion": [float(min(motions)), float(max(motions))],
            "drift_max": np.max(np.stack(drifts), 0).tolist(), "drift_min": np.min(np.stack(drifts), 0).tolist()}
