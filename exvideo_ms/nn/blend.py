"""sgm ``AlphaBlender``: mixes a spatial and a temporal branch with α = sigmoid(mix_factor).

The two SVD networks use opposite orientations (reference/svd_architecture.md §3.6):
- UNet ``time_mixer`` (``merge_strategy="learned_with_images"``): α·spatial + (1−α)·temporal;
- VAE decoder ``VideoResBlock`` (``"learned"``, mix_factor on the block): α·temporal + (1−α)·spatial.

``learned_with_images`` forces α = 1 on frames flagged by ``image_only_indicator``; SVD sampling (sgm,
diffusers, DiffSynth) and ExVideo training always pass zeros, so α = sigmoid(mix_factor) here.
"""
import mindspore as ms
from mindspore import Parameter, nn, ops

ORIENTATIONS = ("spatial", "temporal")  # which branch α multiplies


def alpha_blend(mix_factor, x_spatial, x_temporal, alpha_on: str = "spatial"):
    alpha = ops.sigmoid(mix_factor.astype(ms.float32)).astype(x_spatial.dtype)
    if alpha_on == "spatial":
        return alpha * x_spatial + (1.0 - alpha) * x_temporal
    return alpha * x_temporal + (1.0 - alpha) * x_spatial


class AlphaBlender(nn.Cell):
    """Holds ``mix_factor`` (1,) and blends with the given orientation."""

    def __init__(self, merge_factor: float, alpha_on: str = "spatial"):
        super().__init__()
        if alpha_on not in ORIENTATIONS:
            raise ValueError(f"AlphaBlender: alpha_on must be one of {ORIENTATIONS}, got {alpha_on!r}")
        self.alpha_on = alpha_on
        self.mix_factor = Parameter(ms.Tensor([merge_factor], ms.float32), name="mix_factor")

    def construct(self, x_spatial, x_temporal):
        return alpha_blend(self.mix_factor, x_spatial, x_temporal, self.alpha_on)
