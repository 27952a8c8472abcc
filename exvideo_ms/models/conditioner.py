"""SVD's conditioning (sgm ``GeneralConditioner`` with the embedders of svd_xt.yaml), the one place that turns
pixels into what the UNet is conditioned on — for generation, training, evaluation and precomputation:

| slot        | source                                         | here                                   |
|-------------|------------------------------------------------|----------------------------------------|
| crossattn   | OpenCLIP embedding of the clean first frame    | ``Conditioner.clip_embedding``         |
| vector      | sinusoids of fps_id, motion_bucket_id, cond_aug| ``added_time_vector``                  |
| concat      | VAE mode of first frame + cond_aug·N(0, I)     | ``Conditioner.condition_latent`` (unscaled) |

and the training targets: every frame's VAE mode × the encode scale (``Conditioner.latents``). Unconditional
inputs (classifier-free guidance) are zeros for crossattn and concat, the same vector.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from exvideo_ms.config import SVDConfig
from exvideo_ms.models.image_encoder import preprocess
from exvideo_ms.nn.embeddings import timestep_embedding

ENCODE_CHUNK = 8  # frames per VAE encoder call (ExVideo encodes 8 at a time)


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 images (..., H, W, 3) -> float32 (..., 3, H, W) in [-1, 1] (x/255·2 − 1, diffusers' normalisation)."""
    x = images.astype(np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)
    return np.moveaxis(x, -1, -3)


def added_time_ids(fps: float, motion_bucket_id: float, noise_aug_strength: float) -> np.ndarray:
    """[fps_id, motion_bucket_id, cond_aug] with fps_id = fps − 1 (SVD was conditioned on fps − 1; diffusers
    and DiffSynth take fps and subtract 1)."""
    return np.asarray([fps - 1, motion_bucket_id, noise_aug_strength], np.float32)


def added_time_vector(ids, dim: int):
    """ids (N, 3) -> (N, 3·dim): concatenated sinusoids in embedder order [fps_id, motion_bucket, cond_aug]."""
    ids = ids.astype(ms.float32)
    n = ids.shape[0]
    emb = timestep_embedding(ids.reshape(-1), dim)  # (N·3, dim)
    return emb.reshape(n, 3 * dim)


def repeat_frames(x, num_frames: int):
    """(B, ...) -> (B·T, ...) with the frames of a video consecutive ("b ... -> (b t) ...")."""
    shape = x.shape
    x = ops.broadcast_to(x.reshape((shape[0], 1) + shape[1:]), (shape[0], num_frames) + shape[1:])
    return x.reshape((shape[0] * num_frames,) + shape[1:])


@dataclass
class Conditioning:
    """The conditions of ``n`` videos, one row per video: CLIP embeddings (n, 1, D), unscaled conditioning
    latents (n, z, h, w), added-time vectors (n, 3·dim)."""

    context: Tensor
    concat: Tensor
    vector: Tensor

    def per_frame(self, num_frames: int) -> "Conditioning":
        """Each video's row repeated for its frames: the (n·T, ...) rows the UNet takes."""
        return Conditioning(repeat_frames(self.context, num_frames), repeat_frames(self.concat, num_frames),
                            repeat_frames(self.vector, num_frames))

    def unconditional(self) -> "Conditioning":
        """Classifier-free guidance's unconditional rows: zero context and latent, the same vector."""
        return Conditioning(ops.zeros_like(self.context), ops.zeros_like(self.concat), self.vector)


class Conditioner:
    """The frozen VAE encoder and image encoder of a model, and its conditioning config."""

    def __init__(self, vae, image_encoder, cfg: SVDConfig, chunk: int = ENCODE_CHUNK):
        self.vae, self.image_encoder, self.cfg, self.chunk = vae, image_encoder, cfg, chunk

    def clip_embedding(self, images: np.ndarray) -> Tensor:
        """(N, 3, H, W) in [-1, 1], any size -> (N, 1, D) float32 CLIP embeddings (the embedder's own resize)."""
        pixels = preprocess(images, self.cfg.image_encoder.image_size)
        return self.image_encoder(Tensor(pixels)).astype(ms.float32).reshape(len(images), 1, -1)

    def encode(self, images: np.ndarray) -> Tensor:
        """(N, 3, H, W) in [-1, 1] -> VAE modes (N, z, h, w), unscaled, ``chunk`` images per encoder call."""
        parts = [self.vae.encode(Tensor(images[i:i + self.chunk])) for i in range(0, len(images), self.chunk)]
        return parts[0] if len(parts) == 1 else ops.cat(parts, 0)

    def latents(self, frames: np.ndarray) -> Tensor:
        """(N, 3, H, W) frames in [-1, 1] -> VAE modes × the encode scale (the diffusion targets)."""
        return self.encode(frames) * self.cfg.vae.encode_scale

    def condition_latent(self, images: np.ndarray, noise_aug_strength: float,
                         noise: Optional[np.ndarray] = None) -> Tensor:
        """The VAE mode of images + noise_aug·noise, **not** scaled (sgm ``cond_frames``)."""
        if noise_aug_strength > 0:
            images = images + np.float32(noise_aug_strength) * noise.astype(np.float32)
        return self.encode(images.astype(np.float32))

    def vector(self, fps, motion_bucket_id, noise_aug_strength) -> Tensor:
        """Added-time vectors (N, 3·dim) of per-video fps, motion bucket and noise augmentation (arrays or
        scalars)."""
        ids = np.stack([added_time_ids(f, m, a) for f, m, a in
                        np.broadcast(np.atleast_1d(fps), np.atleast_1d(motion_bucket_id),
                                     np.atleast_1d(noise_aug_strength))])
        return added_time_vector(Tensor(ids), self.cfg.conditioning.addition_time_embed_dim)

    def condition(self, image: np.ndarray, sized: np.ndarray, fps: int, motion_bucket_id: int,
                  noise_aug_strength: float, rng: np.random.Generator) -> Conditioning:
        """One video's conditions from its first frame: ``image`` (H, W, 3) uint8 at its own size for CLIP (as
        diffusers), ``sized`` the same frame at the output size for the VAE; the augmentation noise from ``rng``."""
        x = to_model_range(sized)[None]
        noise = rng.standard_normal(x.shape).astype(np.float32)
        return Conditioning(self.clip_embedding(to_model_range(image)[None]),
                            self.condition_latent(x, noise_aug_strength, noise),
                            self.vector(fps, motion_bucket_id, noise_aug_strength))
