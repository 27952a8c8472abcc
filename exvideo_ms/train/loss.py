"""The denoising loss of the two recipes, as a Cell the train step differentiates.

- ``exvideo`` (ExVideo_svd_train.py): σ uniform over the 1000 Karras sigmas, x0-space MSE against
  ``contrast · x0`` (1.01), back-propagated × √(1+σ²)/σ;
- ``edm`` (sgm / SVD): ln σ ~ N(P_mean, P_std²), x0-space MSE × (σ²+1)/σ².

Both call the denoiser sampling calls (``diffusion.denoiser.denoise``). σ and the noise are inputs, drawn
outside the graph from the sample's own seed.
"""
from dataclasses import dataclass
from typing import Literal

import mindspore as ms
from mindspore import nn, ops

from exvideo_ms.diffusion.denoiser import denoise
from exvideo_ms.diffusion.edm import edm_weight, exvideo_weight
from exvideo_ms.models.conditioner import added_time_vector, repeat_frames

RECIPES = ("exvideo", "edm")


@dataclass
class LossOptions:
    """Denoising loss (``--train.loss.*``)."""

    recipe: Literal["exvideo", "edm"] = "exvideo"
    """exvideo: sigma uniform over the Karras grid, x0 MSE weighted sqrt(1+s^2)/s; edm: ln sigma ~ N(p_mean, p_std^2),
    weight (s^2+1)/s^2"""
    contrast_enhance_scale: float = 1.01
    """exvideo: the x0 target is multiplied by this (ExVideo: 1.01, "avoid gray videos"; > 0)"""
    num_sigmas: int = 1000
    """exvideo: size of the Karras grid sigma is drawn from (>= 1)"""
    p_mean: float = 1.0
    """edm: mean of ln sigma (the earlier MindSpore SVD trainer's value)"""
    p_std: float = 1.6
    """edm: standard deviation of ln sigma (> 0)"""


class DenoisingLoss(nn.Cell):
    """(weighted loss, plain loss) of one batch; everything in float32 except inside the UNet."""

    def __init__(self, unet, recipe: str, contrast: float, vector_dim: int):
        super().__init__()
        if recipe not in RECIPES:
            raise ValueError(f"loss recipe must be one of {RECIPES}, got {recipe!r}")
        self.unet = unet
        self.recipe = recipe
        self.contrast = contrast
        self.vector_dim = vector_dim

    def construct(self, latents, cond_latent, clip_embedding, time_ids, sigma, noise):
        """latents (B, T, C, h, w) clean x0; cond_latent (B, C, h, w) unscaled first-frame latent;
        clip_embedding (B, 1, D); time_ids (B, 3) [fps − 1, motion bucket, noise aug]; sigma (B,);
        noise (B, T, C, h, w)."""
        b, t, c, h, w = latents.shape
        s = sigma.astype(ms.float32)
        x = (latents + s.reshape(b, 1, 1, 1, 1) * noise).reshape(b * t, c, h, w)
        x0_pred = denoise(self.unet, x, repeat_frames(s.reshape(b, 1, 1, 1), t), repeat_frames(cond_latent, t),
                          repeat_frames(clip_embedding, t), repeat_frames(added_time_vector(time_ids, self.vector_dim), t),
                          t, log=ops.log).reshape(b, t, c, h, w)
        target = latents * self.contrast if self.recipe == "exvideo" else latents
        err = ((x0_pred - target) ** 2).reshape(b, -1).mean(axis=1)
        weight = exvideo_weight(sigma) if self.recipe == "exvideo" else edm_weight(sigma)
        return (err * weight.astype(ms.float32)).mean(), err.mean()
