"""UNet residual blocks: sgm ``openaimodel.ResBlock`` and ``video_model.VideoResBlock``.

Parameter names are the original's: ``in_layers.{0: norm, 2: conv}``, ``emb_layers.1``,
``out_layers.{0: norm, 3: conv}``, ``skip_connection``, and in the video block ``time_stack`` (a ResBlock
with a (3, 1, 1) Conv3d) and ``time_mixer.mix_factor``.
"""
from typing import Sequence

from mindspore import mint, nn, ops

from exvideo_ms.backend import Choices
from exvideo_ms.nn.blend import AlphaBlender
from exvideo_ms.nn.layers import Identity, Linear, SiLU, conv2d, conv3d
from exvideo_ms.nn.norm import UNET_RESBLOCK_EPS, GroupNorm


def _conv(dims: int, cin: int, cout: int, kernel, choices: Choices):
    if dims == 2:
        return conv2d(cin, cout, kernel, padding=kernel // 2)
    return conv3d(cin, cout, kernel, choices)


class ResBlock(nn.Cell):
    """GN -> SiLU -> conv, + Linear(SiLU(emb)), GN -> SiLU -> conv, + skip (1×1 conv when widths differ).

    dims=2: x (N, C, H, W), emb (N, E). dims=3: x (B, C, T, H, W), emb (B, T, E) (sgm's
    ``exchange_temb_dims``: the embedding is laid out as (B, C, T) before it is added).
    ``emb_channels=0`` builds the VAE decoder's variant without ``emb_layers`` (``skip_t_emb``).
    ``norm_groups`` and ``choices`` (backend) are the build options of its GroupNorms and 3-D convolutions.
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int = None, dims: int = 2,
                 kernel_size=3, eps: float = UNET_RESBLOCK_EPS, *, norm_groups: int, choices: Choices):
        super().__init__()
        out_channels = out_channels or channels
        self.dims = dims
        self.in_layers = nn.SequentialCell([GroupNorm(channels, eps, norm_groups, choices.group_norm), SiLU(),
                                            _conv(dims, channels, out_channels, kernel_size, choices)])
        self.use_emb = emb_channels > 0
        if self.use_emb:
            self.emb_layers = nn.SequentialCell([SiLU(), Linear(emb_channels, out_channels)])
        self.out_layers = nn.SequentialCell([GroupNorm(out_channels, eps, norm_groups, choices.group_norm), SiLU(),
                                             Identity(), _conv(dims, out_channels, out_channels, kernel_size, choices)])
        self.has_skip_conv = out_channels != channels
        if self.has_skip_conv:
            self.skip_connection = _conv(dims, channels, out_channels, 1, choices)

    def residual(self, x, emb=None):
        """The block's output: skip(x) + out_layers(in_layers(x) + emb)."""
        h = self.in_layers(x)
        if self.use_emb:
            e = self.emb_layers(emb)
            if self.dims == 2:
                e = e.reshape(e.shape + (1, 1))
            else:
                # (B, T, C) -> (B, C, T, 1, 1)
                e = mint.permute(e, (0, 2, 1)).reshape(e.shape[0], e.shape[2], e.shape[1], 1, 1)
            # explicit broadcast: a broadcasting Add keeps ~4x its output as buffers in CPU graph mode
            h = h + ops.broadcast_to(e.astype(h.dtype), h.shape)
        h = self.out_layers(h)
        skip = self.skip_connection(x) if self.has_skip_conv else x
        return skip + h

    def construct(self, x, emb=None):
        return self.residual(x, emb)


def to_video(x, num_frames: int):
    """(B·T, C, H, W) -> (B, C, T, H, W)."""
    bt, c, h, w = x.shape
    return mint.permute(x.reshape(bt // num_frames, num_frames, c, h, w), (0, 2, 1, 3, 4))


def from_video(x):
    """(B, C, T, H, W) -> (B·T, C, H, W)."""
    b, c, t, h, w = x.shape
    return mint.permute(x, (0, 2, 1, 3, 4)).reshape(b * t, c, h, w)


class VideoResBlock(ResBlock):
    """Spatial ResBlock on every frame, then ``time_stack`` across frames, mixed by ``time_mixer``:
    α·spatial + (1−α)·temporal. x (B·T, C, H, W), emb (B·T, E)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, video_kernel_size: Sequence[int],
                 merge_factor: float, *, norm_groups: int, choices: Choices):
        super().__init__(channels, emb_channels, out_channels, dims=2, norm_groups=norm_groups, choices=choices)
        self.time_stack = ResBlock(out_channels, emb_channels, out_channels, dims=3,
                                   kernel_size=tuple(video_kernel_size), norm_groups=norm_groups, choices=choices)
        self.time_mixer = AlphaBlender(merge_factor, alpha_on="spatial")

    def construct(self, x, emb, num_frames: int):
        x = self.residual(x, emb)
        x_spatial = to_video(x, num_frames)
        emb_t = emb.reshape(emb.shape[0] // num_frames, num_frames, emb.shape[1])
        x_temporal = self.time_stack(x_spatial, emb_t)
        return from_video(self.time_mixer(x_spatial, x_temporal))
