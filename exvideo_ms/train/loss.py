"""The denoising loss of the two recipes, as a Cell the train step differentiates.

- ``exvideo`` (ExVideo_svd_train.py): σ uniform over the 1000 Karras sigmas, x0-space MSE against
  ``contrast · x0`` (1.01), back-propagated × √(1+σ²)/σ;
- ``edm`` (sgm / SVD): ln σ ~ N(P_mean, P_std²), x0-space MSE × (σ²+1)/σ².

Both call the denoiser sampling calls (``diffusion.denoiser.denoise``). σ and the noise are inputs, drawn
outside the graph from the sample's own seed.

Object weighting (``object_weight`` K > 0, this project's addition, not ExVideo's): each latent pixel's squared
error is weighted 1 + K·f, f the share of object pixels under it (``data/object_masks.py``), and the sum is
divided by the sum of the weights, so the loss keeps its scale. Small objects cover a few percent of a frame, so
the plain MSE barely sees them: on the demo data, training on it lowered the held-out loss while the extended
model lost the objects (assets/demo/MODEL_CARD.md).
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
    object_weight: float = 0.0
    """extra weight K of the objects: each latent pixel's x0 error weighted 1 + K * (its share of object pixels),
    normalised by the mean weight (>= 0; 0 = off; > 0 needs latents from svd_tools/precompute.py --object_masks)"""


class DenoisingLoss(nn.Cell):
    """(weighted loss, plain loss) of one batch; everything in float32 except inside the UNet. The weighted loss
    carries the σ weight (and the object weight when given); the plain loss is the unweighted x0 MSE."""

    def __init__(self, unet, recipe: str, contrast: float, vector_dim: int, object_weight: float = 0.0):
        super().__init__()
        if recipe not in RECIPES:
            raise ValueError(f"loss recipe must be one of {RECIPES}, got {recipe!r}")
        self.unet = unet
        self.recipe = recipe
        self.contrast = contrast
        self.vector_dim = vector_dim
        self.object_weight = float(object_weight)

    def construct(self, latents, cond_latent, clip_embedding, time_ids, sigma, noise, object_fraction=None):
        """latents (B, T, C, h, w) clean x0; cond_latent (B, C, h, w) unscaled first-frame latent;
        clip_embedding (B, 1, D); time_ids (B, 3) [fps − 1, motion bucket, noise aug]; sigma (B,);
        noise (B, T, C, h, w); object_fraction (B, T, h, w) in [0, 1] or None."""
        b, t, c, h, w = latents.shape
        s = sigma.astype(ms.float32)
        x = (latents + s.reshape(b, 1, 1, 1, 1) * noise).reshape(b * t, c, h, w)
        x0_pred = denoise(self.unet, x, repeat_frames(s.reshape(b, 1, 1, 1), t), repeat_frames(cond_latent, t),
                          repeat_frames(clip_embedding, t), repeat_frames(added_time_vector(time_ids, self.vector_dim), t),
                          t, log=ops.log).reshape(b, t, c, h, w)
        target = latents * self.contrast if self.recipe == "exvideo" else latents
        squared = (x0_pred - target) ** 2
        plain = squared.reshape(b, -1).mean(axis=1)
        err = plain
        if object_fraction is not None:
            pixel = 1.0 + self.object_weight * object_fraction.astype(ms.float32).reshape(b, t, 1, h, w)
            err = (squared * pixel).reshape(b, -1).sum(axis=1) / (pixel.reshape(b, -1).sum(axis=1) * c)
        weight = exvideo_weight(sigma) if self.recipe == "exvideo" else edm_weight(sigma)
        return (err * weight.astype(ms.float32)).mean(), plain.mean()
