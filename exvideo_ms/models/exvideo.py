"""ExVideo's extension of SVD-XT's temporal attention blocks (Duan et al. 2024, arXiv 2406.14130;
DiffSynth-Studio ``svd_unet.py``: ``TrainableTemporalTimesteps``, ``PositionalID``, ``positional_conv``).

In every SpatialVideoTransformer (16 in SVD-XT):
- ``positional_embedding.embeddings`` (N, C), N = 128: a learned table whose first T rows replace the
  sinusoid of the frame index, still followed by ``time_pos_embed``. Initialised with the sinusoid at the
  folded positions of ``positional_ids`` (0..24, 23..4, 5..24, ...), i.e. only positions SVD-XT was trained on.
- ``positional_conv``: Conv3d C -> C, 3×3×3, reflect padding on T, H and W, applied to the temporal-branch
  input (spatial output + position embedding), per video, not residual. Identity at initialisation.
"""
import mindspore as ms
import numpy as np
from mindspore import Parameter, mint, nn, ops
from mindspore.common.initializer import Initializer

from exvideo_ms.backend import Choices
from exvideo_ms.config import ExVideoConfig, UNetConfig
from exvideo_ms.nn.embeddings import timestep_embedding
from exvideo_ms.nn.layers import Conv3d, conv3d_precision

# DiffSynth PositionalID(max_id=25, repeat_length=20): positions 0..24 once, then a triangle wave
# bouncing between 23 and 4 (reference/exvideo.md §2)
POSITION_MAX_ID = 25
POSITION_REPEAT = 20
POSITIONAL_KERNEL = 3  # positional_conv is 3×3×3 with padding 1
EXTENSION_CELLS = ("positional_embedding", "positional_conv")  # what ExVideo adds to a SpatialVideoTransformer


def is_extension_parameter(name: str) -> bool:
    """Whether a parameter name (``unet.``-prefixed or not) is one of ExVideo's additions: the one test every
    caller uses (checkpoint loading, trainable sets, converter tables)."""
    dotted = f".{name}"
    return any(f".{cell}." in dotted for cell in EXTENSION_CELLS)


def positional_ids(n: int, max_id: int = POSITION_MAX_ID, repeat_length: int = POSITION_REPEAT) -> np.ndarray:
    """Folded position of each of ``n`` frames (DiffSynth ``PositionalID``): p = f below ``max_id``, then with
    q = (f − max_id) mod 2·repeat: p = max_id − 2 − q while q < repeat, else p = max_id − 2·repeat + q.
    For 128 frames: 0..24, 23..4, 5..24, 23..4, 5..24, 23..4, 5, 6, 7."""
    ids = []
    for f in range(n):
        if f < max_id:
            ids.append(f)
            continue
        q = (f - max_id) % (2 * repeat_length)
        ids.append(max_id - 2 - q if q < repeat_length else max_id - 2 * repeat_length + q)
    return np.asarray(ids, np.int64)


class PositionalEmbedding(nn.Cell):
    """The trainable (N, C) table; ``construct(T)`` returns rows 0..T−1."""

    def __init__(self, num_positions: int, channels: int):
        super().__init__()
        self.num_positions = num_positions
        init = timestep_embedding(ms.Tensor(positional_ids(num_positions), ms.float32), channels)
        self.embeddings = Parameter(init, name="embeddings")

    def construct(self, num_frames: int):
        return self.embeddings[:num_frames]


def reflect_pad1(x, axis: int):
    """Reflect padding of 1 on one axis (torch ``padding_mode="reflect"``): [x1, x0..xn-1, xn-2]."""
    n = x.shape[axis]
    first = ops.narrow(x, axis, 1, 1)
    last = ops.narrow(x, axis, n - 2, 1)
    return ops.cat([first, x, last], axis)


class CentreIdentity(Initializer):
    """Conv3d weight (C, C, k, k, k) that is the identity map: centre tap = I, all else 0 (with reflect
    padding the conv is then exactly the identity)."""

    def _initialize(self, arr):
        arr[...] = 0
        c = arr.shape[2] // 2
        arr[:, :, c, c, c] = np.eye(arr.shape[0], arr.shape[1], dtype=arr.dtype)


class PositionalConv3d(Conv3d):
    """Conv3d(C, C, 3) with reflect padding 1 on T, H, W, over the tokens of each video separately.
    ``weight`` (C, C, 3, 3, 3) and ``bias`` (C,) sit on this cell, as in DiffSynth's patch file; it computes in
    the backend's Conv3d dtype (float16 on Ascend) with float32 master weights when trained."""

    def __init__(self, channels: int, choices: Choices):
        super().__init__(channels, channels, POSITIONAL_KERNEL, pad_mode="valid", has_bias=True,
                         weight_init=CentreIdentity(), bias_init="zeros", **conv3d_precision(choices))

    def construct(self, x, num_frames: int, h: int, w: int):
        """x (B·T, h·w, C) tokens -> same shape."""
        if num_frames < 2 or h < 2 or w < 2:
            raise ValueError(f"ExVideo's reflect-padded positional conv needs at least 2 frames and 2x2 latents at "
                             f"every attention level; got {num_frames} frames at {h}x{w} (use more frames or a "
                             f"larger image)")
        bt, s, c = x.shape
        b = bt // num_frames
        v = mint.permute(x.reshape(b, num_frames, h, w, c), (0, 4, 1, 2, 3))  # (B, C, T, h, w)
        for axis in (2, 3, 4):
            v = reflect_pad1(v, axis)
        v = super().construct(v)
        return mint.permute(v, (0, 2, 3, 4, 1)).reshape(bt, s, c)


def check_geometry(unet: UNetConfig, num_frames: int, latent_h: int, latent_w: int) -> None:
    """The reflect-padded positional conv needs 2 frames and 2×2 tokens at every attention level, the middle
    block's (the deepest level, which always has attention) included: raise a ValueError naming what is too
    small, before any graph runs. SVD-XT's middle block sees latents / 8: 128 pixels at least."""
    h, w = latent_h, latent_w
    for _ in range(len(unet.channel_mult) - 1):
        h, w = (h + 1) // 2, (w + 1) // 2  # Downsample: conv 3x3, stride 2, padding 1
    if num_frames < 2 or min(h, w) < 2:
        raise ValueError(f"ExVideo's reflect-padded positional conv needs at least 2 frames and 2x2 latents at every "
                         f"attention level; got {num_frames} frame(s) and {h}x{w} latents at the deepest level, the "
                         f"middle block's (use more frames or a larger image)")


def extension_layers(cfg: ExVideoConfig, channels: int, choices: Choices) -> dict:
    """The cells ExVideo adds to one SpatialVideoTransformer of width ``channels``."""
    layers = {"positional_embedding": PositionalEmbedding(cfg.num_positions, channels)}
    if cfg.positional_conv:
        layers["positional_conv"] = PositionalConv3d(channels, choices)
    return layers
