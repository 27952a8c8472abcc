"""The Kinetics-400 I3D network whose logits FVD compares (Carreira & Zisserman 2017, arXiv 1705.07750; the
Inception-v1 "inflated" to 3-D), as cd-fvd and TATS use it: piergiaj's pytorch-i3d ``InceptionI3d(400)``,
weights ``i3d_pretrained_400.pt``. Cell and parameter names are that file's (``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_3b.b1b.bn.running_mean``, ``logits.conv3d.bias``), so its converter table is the identity.

Every convolution and max-pool pads "same" as TensorFlow does (front gets the smaller half), computed from
the static input shape; the max-pools pad with zeros, as the original's ``F.pad`` does. Batch norm is the
frozen inference form (running statistics, eps 1e-5): this network only measures, it never trains.

``preprocess`` is cd-fvd's ``preprocess_i3d``: uint8 frames -> bilinear resize to 224² (half-pixel centres,
no antialiasing, as ``F.interpolate(align_corners=False)``) -> [-1, 1], laid out (B, C, T, H, W).
"""
from typing import Sequence, Tuple

import numpy as np
from mindspore import nn, ops

from exvideo_ms.backend import Choices
from exvideo_ms.nn.layers import Conv3d, conv3d_precision
from exvideo_ms.nn.norm import FrozenBatchNorm

NUM_CLASSES = 400  # Kinetics-400
INPUT_SIZE = 224  # cd-fvd TARGET_RESOLUTION
BN_EPS = 1e-5  # pytorch-i3d Unit3D's BatchNorm3d
LOGITS_POOL = (2, 7, 7)  # pytorch-i3d's AvgPool3d before the logits, stride 1

# name -> (input channels, [b0, b1a, b1b, b2a, b2b, b3b] output channels) of each Inception module, and
# name -> (kernel, stride) of the max-pools between them (pytorch-i3d's endpoints)
MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
POOLS = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}


def same_padding(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> Tuple[int, ...]:
    """TensorFlow "same" padding of (T, H, W) as ops.pad wants it: (w_front, w_back, h_front, h_back, t_front,
    t_back), the back getting the odd pixel."""
    pads = []
    for s, k, st in zip(size, kernel, stride):
        total = max(k - (st if s % st == 0 else s % st), 0)
        pads.append((total // 2, total - total // 2))
    return tuple(p for pair in reversed(pads) for p in pair)


class Unit3D(nn.Cell):
    """Same-padded Conv3d, then batch norm and ReLU (the logits unit: bias, neither norm nor ReLU)."""

    def __init__(self, cin: int, cout: int, kernel, choices: Choices, stride=(1, 1, 1), logits: bool = False):
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.logits = logits
        self.conv3d = Conv3d(cin, cout, self.kernel, stride=self.stride, pad_mode="valid", has_bias=logits,
                             **conv3d_precision(choices))
        if not logits:
            self.bn = FrozenBatchNorm(cout, BN_EPS)

    def construct(self, x):
        pad = same_padding(x.shape[2:], self.kernel, self.stride)
        if sum(pad):
            x = ops.pad(x, pad)
        x = self.conv3d(x)
        if self.logits:
            return x
        return ops.relu(self.bn(x))


class MaxPool3dSame(nn.Cell):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.pool = nn.MaxPool3d(self.kernel, self.stride, pad_mode="valid")

    def construct(self, x):
        pad = same_padding(x.shape[2:], self.kernel, self.stride)
        if sum(pad):
            x = ops.pad(x, pad)
        return self.pool(x)


class InceptionModule(nn.Cell):
    """Four branches concatenated on channels: 1×1; 1×1 then 3×3×3; 1×1 then 3×3×3; 3×3×3 max-pool then 1×1."""

    def __init__(self, cin: int, out: Sequence[int], choices: Choices):
        super().__init__()
        self.b0 = Unit3D(cin, out[0], (1, 1, 1), choices)
        self.b1a = Unit3D(cin, out[1], (1, 1, 1), choices)
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3), choices)
        self.b2a = Unit3D(cin, out[3], (1, 1, 1), choices)
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3), choices)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, out[5], (1, 1, 1), choices)

    def construct(self, x):
        return ops.cat((self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))), axis=1)


class InceptionI3d(nn.Cell):
    """(B, 3, T, 224, 224) clips in [-1, 1] -> (B, 400) Kinetics logits, averaged over the time positions
    left after the final pool (one for 16 frames). Dropout is the identity at inference and is omitted."""

    def __init__(self, choices: Choices, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), choices, stride=(2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, (1, 1, 1), choices)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), choices)
        for name, (kernel, stride) in POOLS.items():
            setattr(self, name, MaxPool3dSame(kernel, stride))
        for name, (cin, out) in MIXED.items():
            setattr(self, name, InceptionModule(cin, out, choices))
        self.avg_pool = nn.AvgPool3d(LOGITS_POOL, stride=1, pad_mode="valid")
        self.logits = Unit3D(1024, num_classes, (1, 1, 1), choices, logits=True)

    def construct(self, x):
        x = self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))
        x = self.MaxPool3d_3a_3x3(self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x)))
        x = self.MaxPool3d_4a_3x3(self.Mixed_3c(self.Mixed_3b(x)))
        x = self.Mixed_4f(self.Mixed_4e(self.Mixed_4d(self.Mixed_4c(self.Mixed_4b(x)))))
        x = self.Mixed_5c(self.Mixed_5b(self.MaxPool3d_5a_2x2(x)))
        t, h, w = x.shape[2:]
        if h != LOGITS_POOL[1] or w != LOGITS_POOL[2] or t < LOGITS_POOL[0]:
            raise ValueError(f"I3D's last features are {t}x{h}x{w}; its pool needs at least 2 frames of 7x7: give "
                             f"clips of >= 9 frames at {INPUT_SIZE}x{INPUT_SIZE} (see preprocess)")
        x = self.logits(self.avg_pool(x))  # (B, classes, T', 1, 1)
        return x.reshape(x.shape[:3]).mean(2)


# ----------------------------------------------------------------------------------------------------------
def bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of a 1-D bilinear resize with half-pixel centres and no antialiasing
    (torch ``F.interpolate(mode="bilinear", align_corners=False)``: source coordinate clamped at 0)."""
    scale = size_in / size_out
    src = np.maximum((np.arange(size_out) + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = src - lo
    m = np.zeros((size_out, size_in), np.float64)
    np.add.at(m, (np.arange(size_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(size_out), hi), frac)
    return m


def preprocess(videos: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """(B, T, H, W, 3) uint8 videos -> (B, 3, T, size, size) float32 in [-1, 1], as cd-fvd's preprocess_i3d."""
    v = np.asarray(videos)
    if v.ndim != 5 or v.shape[-1] != 3 or v.dtype != np.uint8:
        raise ValueError(f"videos must be (B, T, H, W, 3) uint8, got {v.dtype} {v.shape}")
    mh = bilinear_matrix(v.shape[2], size).astype(np.float32)
    mw = bilinear_matrix(v.shape[3], size).astype(np.float32)
    x = np.einsum("yh,bthwc,xw->bctyx", mh, v.astype(np.float32), mw, optimize=True)
    return (2.0 * x / 255.0 - 1.0).astype(np.float32)
