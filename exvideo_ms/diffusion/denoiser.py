"""The preconditioned denoiser D(x; σ) around the UNet — the one function that sampling and the training loss
both call — with per-frame classifier-free guidance and ExVideo's keyframes on top for sampling.

SVD's v-prediction preconditioning with EDM's c_noise (``edm.v_scalings``):
D(x; σ) = c_skip(σ)·x + c_out(σ)·F([c_in(σ)·x ‖ concat], c_noise(σ), context, vector).
"""
from __future__ import annotations

import numpy as np
from mindspore import Tensor, ops

from exvideo_ms.diffusion.edm import v_scalings
from exvideo_ms.diffusion.guidance import guide


def denoise(unet, x, sigma, concat, context, vector, num_frames: int, log=np.log):
    """D(x; σ) for rows of videos: x (N, C, h, w) with N = videos·num_frames; concat (N, z, h, w), context
    (N, M, D), vector (N, 3·dim) per row; σ a float (sampling) or a tensor broadcastable to x, (N, 1, 1, 1), with
    ``log=ops.log`` (training: one σ per video, repeated for its frames). Returns float32 x0 estimates."""
    c_skip, c_out, c_in, c_noise = v_scalings(sigma, log=log)
    inp = ops.cat([x * c_in, concat], 1)
    if isinstance(c_noise, Tensor):
        steps = c_noise.reshape(-1)
    else:
        steps = Tensor(np.full((inp.shape[0],), c_noise, np.float32))
    return x * c_skip + unet(inp, steps, context, vector, num_frames).astype(x.dtype) * c_out


def denoise_guided(unet, x, sigma: float, *, cond, num_frames: int, scales=None, cfg_mode: str = "batch"):
    """D(x; σ) of one video (x (T, C, h, w)) with per-frame guidance ``scales`` ((T, 1, 1, 1); None: no
    unconditional pass): D_u + s_t·(D_c − D_u), the unconditional rows of ``cond.unconditional()``. ``cfg_mode``
    "batch" runs both as one UNet batch, "sequential" one after the other (half the activation memory)."""
    if scales is None:
        return denoise(unet, x, sigma, cond.concat, cond.context, cond.vector, num_frames)
    uncond = cond.unconditional()
    if cfg_mode == "batch":
        t = x.shape[0]
        both = denoise(unet, ops.cat([x, x], 0), sigma, ops.cat([uncond.concat, cond.concat], 0),
                       ops.cat([uncond.context, cond.context], 0), ops.cat([uncond.vector, cond.vector], 0),
                       num_frames)
        return guide(both[:t], both[t:], scales)
    return guide(denoise(unet, x, sigma, uncond.concat, uncond.context, uncond.vector, num_frames),
                 denoise(unet, x, sigma, cond.concat, cond.context, cond.vector, num_frames), scales)


def with_keyframes(denoiser, key_latents: np.ndarray, ids, noise: np.ndarray):
    """ExVideo's keyframes: before every evaluation, frames ``ids`` are replaced by their latents noised to the
    current σ with the run's own noise (DiffSynth re-noises ``mask_frame_ids`` each step). Replacing inside the
    denoiser is exact: the Euler step's last move lands on D, and D only sees the replaced frames."""
    mask = np.zeros((noise.shape[0], 1, 1, 1), np.float32)
    keys = np.zeros(noise.shape, np.float32)
    for j, i in enumerate(ids):
        mask[i] = 1.0
        keys[i] = key_latents[j]
    mask_t, keys_t, noise_t = Tensor(mask), Tensor(keys), Tensor(noise * mask)

    def denoise_with_keys(x, sigma: float):
        return denoiser(x * (1.0 - mask_t) + keys_t * mask_t + noise_t * sigma, sigma)

    return denoise_with_keys
