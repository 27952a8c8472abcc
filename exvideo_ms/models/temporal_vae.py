"""The temporal VAE of SVD: the SD image encoder (+ ``quant_conv``) and the ``VideoDecoder``.

Sources (generative-models): ``sgm/modules/diffusionmodules/model.py`` (``Encoder``, ``ResnetBlock``,
``AttnBlock``, ``Downsample``, ``Upsample``) and ``sgm/modules/autoencoding/temporal_ae.py``
(``VideoDecoder`` with ``time_mode="conv-only"``, ``VideoResBlock``, ``AE3DConv``).
Parameter names are the original's; the encoder keys come from ``conditioner.embedders.3.encoder``.

Latent conventions (reference/svd_architecture.md §4-5): ``encode`` returns the distribution's mode
unscaled (the conditioning latent); ``decode`` takes latents already divided by ``scale_factor``.
"""
from typing import Sequence

import mindspore as ms
from mindspore import Parameter, mint, nn, ops

from exvideo_ms.backend import Choices
from exvideo_ms.config import VAEConfig
from exvideo_ms.nn.attention import AttentionCall, Kernel, dot_product_attention
from exvideo_ms.nn.blend import alpha_blend
from exvideo_ms.nn.layers import Conv2d, Identity, Upsample, conv2d, conv3d, silu
from exvideo_ms.nn.norm import VAE_EPS, VAE_TEMPORAL_EPS, GroupNorm
from exvideo_ms.nn.resblock import ResBlock, from_video, to_video

DECODER_MIX_INIT = 0.0  # sgm VideoDecoder: VideoResBlock(alpha=0.0, merge_strategy="learned")


class ResnetBlock(nn.Cell):
    """norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> conv2, + x (``nin_shortcut`` 1×1 when widths differ)."""

    def __init__(self, cin: int, cout: int, *, norm_groups: int, choices: Choices):
        super().__init__()
        self.norm1 = GroupNorm(cin, VAE_EPS, norm_groups, choices.group_norm)
        self.conv1 = conv2d(cin, cout, 3, padding=1)
        self.norm2 = GroupNorm(cout, VAE_EPS, norm_groups, choices.group_norm)
        self.dropout = Identity()
        self.conv2 = conv2d(cout, cout, 3, padding=1)
        self.has_shortcut = cin != cout
        if self.has_shortcut:
            self.nin_shortcut = conv2d(cin, cout, 1)

    def residual(self, x):
        h = self.conv1(silu(self.norm1(x)))
        h = self.conv2(self.dropout(silu(self.norm2(h))))
        return (self.nin_shortcut(x) if self.has_shortcut else x) + h

    def construct(self, x):
        return self.residual(x)


class VideoResBlock(ResnetBlock):
    """Decoder block: spatial ResnetBlock, then ``time_stack`` (ResBlock, Conv3d (3,1,1), no time embedding),
    mixed with the **VAE orientation** α·temporal + (1−α)·spatial, α = sigmoid(``mix_factor``)."""

    def __init__(self, cin: int, cout: int, video_kernel_size: Sequence[int], *, norm_groups: int,
                 choices: Choices):
        super().__init__(cin, cout, norm_groups=norm_groups, choices=choices)
        self.time_stack = ResBlock(cout, 0, cout, dims=3, kernel_size=tuple(video_kernel_size),
                                   eps=VAE_TEMPORAL_EPS, norm_groups=norm_groups, choices=choices)
        self.mix_factor = Parameter(ms.Tensor([DECODER_MIX_INIT], ms.float32), name="mix_factor")

    def construct(self, x, num_frames: int):
        x = to_video(self.residual(x), num_frames)
        return from_video(alpha_blend(self.mix_factor, x, self.time_stack(x), alpha_on="temporal"))


class AttnBlock(nn.Cell):
    """Single-head self-attention over the h·w positions; q, k, v, proj_out are 1×1 convs; + x. The attention
    itself goes through ``dot_product_attention`` (kind "vae"), with its kernel choice and memory budget."""

    def __init__(self, channels: int, *, norm_groups: int, choices: Choices):
        super().__init__()
        self.norm = GroupNorm(channels, VAE_EPS, norm_groups, choices.group_norm)
        self.q = conv2d(channels, channels, 1)
        self.k = conv2d(channels, channels, 1)
        self.v = conv2d(channels, channels, 1)
        self.proj_out = conv2d(channels, channels, 1)
        self.channels = channels
        self.kernel = Kernel.choose(choices, "vae", 1, channels)

    def construct(self, x):
        n, c, h, w = x.shape
        hn = self.norm(x)
        q = mint.permute(self.q(hn).reshape(n, c, h * w), (0, 2, 1))
        k = mint.permute(self.k(hn).reshape(n, c, h * w), (0, 2, 1))
        v = mint.permute(self.v(hn).reshape(n, c, h * w), (0, 2, 1))
        out = mint.permute(dot_product_attention(q, k, v, 1, self.kernel), (0, 2, 1)).reshape(n, c, h, w)
        return x + self.proj_out(out)

    def call(self, images: int, h: int, w: int) -> AttentionCall:
        return AttentionCall(self.kernel, images, h * w, h * w, 1, self.channels)


class Downsample(nn.Cell):
    """Zero-pad right and bottom by 1, then conv 3×3 stride 2 without padding (``conv``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv2d(channels, channels, 3, stride=2)

    def construct(self, x):
        return self.conv(ops.pad(x, (0, 1, 0, 1)))


class Level(nn.Cell):
    """``down.i`` / ``up.i``: ``block`` list and an optional ``downsample`` / ``upsample``."""

    def __init__(self, blocks, resample=None, resample_name: str = "downsample"):
        super().__init__()
        self.block = nn.CellList(blocks)
        self.has_resample = resample is not None
        if resample is not None:
            setattr(self, resample_name, resample)
        self.resample_name = resample_name


class Mid(nn.Cell):
    def __init__(self, block_1, attn_1, block_2):
        super().__init__()
        self.block_1 = block_1
        self.attn_1 = attn_1
        self.block_2 = block_2


class Encoder(nn.Cell):
    """Image encoder (frames are independent): (N, 3, H, W) -> (N, 2·z, H/8, W/8) moments."""

    def __init__(self, cfg: VAEConfig, *, choices: Choices):
        super().__init__()
        opts = dict(norm_groups=cfg.norm_groups, choices=choices)
        self.conv_in = conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        in_mult = (1,) + tuple(cfg.ch_mult)
        levels = []
        for i, mult in enumerate(cfg.ch_mult):
            cin, cout = cfg.ch * in_mult[i], cfg.ch * mult
            blocks = [ResnetBlock(cin if j == 0 else cout, cout, **opts) for j in range(cfg.num_res_blocks)]
            down = Downsample(cout) if i != len(cfg.ch_mult) - 1 else None
            levels.append(Level(blocks, down, "downsample"))
        self.down = nn.CellList(levels)
        self.num_downsamples = len(cfg.ch_mult) - 1
        top = cfg.ch * cfg.ch_mult[-1]
        self.mid = Mid(ResnetBlock(top, top, **opts), AttnBlock(top, **opts), ResnetBlock(top, top, **opts))
        self.norm_out = GroupNorm(top, VAE_EPS, cfg.norm_groups, choices.group_norm)
        self.conv_out = conv2d(top, 2 * cfg.z_channels, 3, padding=1)

    def construct(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if level.has_resample:
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(silu(self.norm_out(h)))

    def attention_calls(self, images: int, height: int, width: int):
        """The mid block's attention runs at the image size after every downsampling (pad 1, stride 2)."""
        for _ in range(self.num_downsamples):
            height, width = height // 2, width // 2
        return [self.mid.attn_1.call(images, height, width)]


class AE3DConv(Conv2d):
    """``conv_out``: a Conv2d 3×3 on each frame (its own ``weight``/``bias``, as sgm's Conv2d subclass), then
    ``time_mix_conv`` Conv3d (3,1,1) across frames with zero padding at the chunk's first and last frame;
    no residual."""

    def __init__(self, cin: int, cout: int, video_kernel_size: Sequence[int], choices: Choices):
        super().__init__(cin, cout, 3, pad_mode="pad", padding=1, has_bias=True)
        self.time_mix_conv = conv3d(cout, cout, tuple(video_kernel_size), choices)

    def construct(self, x, num_frames: int):
        h = super().construct(x)
        return from_video(self.time_mix_conv(to_video(h, num_frames)))


class VideoDecoder(nn.Cell):
    """(B·T, z, h, w) latents -> (B·T, 3, 8h, 8w) frames in [-1, 1] (unclamped)."""

    def __init__(self, cfg: VAEConfig, *, choices: Choices):
        super().__init__()
        opts = dict(norm_groups=cfg.norm_groups, choices=choices)
        k = cfg.video_kernel_size
        top = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = conv2d(cfg.z_channels, top, 3, padding=1)
        self.mid = Mid(VideoResBlock(top, top, k, **opts), AttnBlock(top, **opts), VideoResBlock(top, top, k, **opts))
        levels = []
        cin = top
        for i in reversed(range(len(cfg.ch_mult))):  # sgm builds up.3 first and inserts at the front
            cout = cfg.ch * cfg.ch_mult[i]
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(VideoResBlock(cin, cout, k, **opts))
                cin = cout
            levels.insert(0, Level(blocks, Upsample(cout) if i != 0 else None, "upsample"))
        self.up = nn.CellList(levels)
        self.num_levels = len(levels)
        self.norm_out = GroupNorm(cin, VAE_EPS, cfg.norm_groups, choices.group_norm)
        self.conv_out = AE3DConv(cin, cfg.out_ch, k, choices)

    def construct(self, z, num_frames: int):
        h = self.conv_in(z)
        h = self.mid.block_1(h, num_frames)
        h = self.mid.attn_1(h)
        h = self.mid.block_2(h, num_frames)
        for i in range(self.num_levels):
            level = self.up[self.num_levels - 1 - i]
            for block in level.block:
                h = block(h, num_frames)
            if level.has_resample:
                h = level.upsample(h)
        return self.conv_out(silu(self.norm_out(h)), num_frames)


class TemporalVAE(nn.Cell):
    """``encoder`` + ``quant_conv`` (the conditioning embedder's path) and the video ``decoder``."""

    def __init__(self, cfg: VAEConfig, *, choices: Choices):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg, choices=choices)
        self.quant_conv = conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1)
        self.decoder = VideoDecoder(cfg, choices=choices)
        self.z_channels = cfg.z_channels

    def encode(self, x):
        """(N, 3, H, W) in [-1, 1] -> mode of the posterior (N, z, H/8, W/8), **not** scaled."""
        moments = self.quant_conv(self.encoder(x))
        return moments[:, : self.z_channels]

    def decode(self, z, num_frames: int):
        """(B·T, z, h, w) latents (already divided by scale_factor) -> (B·T, 3, 8h, 8w)."""
        return self.decoder(z, num_frames)

    def attention_calls(self, encoded: int, height: int, width: int, decoded: int):
        """The attention calls of encoding ``encoded`` images of height×width and decoding ``decoded`` latent
        frames of that image size (the decoder's mid block runs at the latent size)."""
        calls = self.encoder.attention_calls(encoded, height, width) if encoded else []
        if decoded:
            f = 2 ** self.encoder.num_downsamples
            calls.append(self.decoder.mid.attn_1.call(decoded, height // f, width // f))
        return calls
