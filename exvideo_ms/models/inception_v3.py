"""The InceptionV3 of FID and the Inception Score (Szegedy et al. 2016, arXiv 1512.00567), as torchmetrics
computes them: torch-fidelity's ``FeatureExtractorInceptionV3``, the TensorFlow 2015-12-05 graph converted to
PyTorch (weights ``weights-inception-2015-12-05-6726825d.pth``, 1008 classes). Cells and parameters carry that
file's names (``Mixed_6b.branch7x7_2.conv.weight``, ``Mixed_7c.branch_pool.bn.running_var``, ``fc.bias``), so
the converter table is the identity.

Input: uint8 frames -> ``preprocess`` (resize to 299², then (x − 128) / 128) -> the network, which returns the 2048 pool features (FID) and the 1008 logits
without the fc bias ("logits_unbiased": torch-fidelity's and torchmetrics' Inception Score input).
The TF-compatible blocks differ from torchvision's: average pools exclude the padding, and the last block
max-pools. Batch norm is the frozen inference form (eps 1e-3).

The resize is torchmetrics' default, an antialiased bilinear one (``F.interpolate(antialias=True)``), or with
``resize="tf1"`` torch-fidelity's, TensorFlow 1.x's bilinear (no half-pixel offset, no antialiasing). For
frames larger than 299² the two give different scores: report which one was used.
"""
from typing import Tuple

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from exvideo_ms.nn.layers import Linear
from exvideo_ms.nn.norm import FrozenBatchNorm

INPUT_SIZE = 299  # torch-fidelity FeatureExtractorInceptionV3.INPUT_IMAGE_SIZE
NUM_CLASSES = 1008  # the TensorFlow graph's 1001 ImageNet classes, padded to 1008
BN_EPS = 1e-3  # torch-fidelity BasicConv2d's BatchNorm2d


class BasicConv2d(nn.Cell):
    """Conv2d without bias, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
        padding = padding if isinstance(padding, tuple) else (padding, padding)
        if any(padding):
            self.conv = nn.Conv2d(cin, cout, kernel, stride, pad_mode="pad",
                                  padding=(padding[0], padding[0], padding[1], padding[1]), has_bias=False)
        else:
            self.conv = nn.Conv2d(cin, cout, kernel, stride, pad_mode="valid", has_bias=False)
        self.bn = FrozenBatchNorm(cout, BN_EPS)

    def construct(self, x):
        return ops.relu(self.bn(self.conv(x)))


def avg_pool_3x3(x):
    """3×3 average, stride 1, padding 1, the padding not counted (TensorFlow's SAME average pool)."""
    return ops.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


def max_pool_3x3_s2(x):
    return ops.max_pool2d(x, 3, 2)


class InceptionA(nn.Cell):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def construct(self, x):
        return ops.cat((self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                        self.branch_pool(avg_pool_3x3(x))), axis=1)


class InceptionB(nn.Cell):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def construct(self, x):
        return ops.cat((self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                        max_pool_3x3_s2(x)), axis=1)


class InceptionC(nn.Cell):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def construct(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(d))
        return ops.cat((self.branch1x1(x), b7, d, self.branch_pool(avg_pool_3x3(x))), axis=1)


class InceptionD(nn.Cell):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def construct(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return ops.cat((self.branch3x3_2(self.branch3x3_1(x)), b7, max_pool_3x3_s2(x)), axis=1)


class InceptionE(nn.Cell):
    """``max_pool``: the pool branch of the last block (InceptionE_2) max-pools; the first's averages."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def construct(self, x):
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.max_pool:
            pooled = ops.max_pool2d(ops.pad(x, (1, 1, 1, 1), value=float("-inf")), 3, 1)
        else:
            pooled = avg_pool_3x3(x)
        return ops.cat((self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3), self.branch3x3dbl_3a(d),
                        self.branch3x3dbl_3b(d), self.branch_pool(pooled)), axis=1)


class InceptionV3(nn.Cell):
    """(N, 3, 299, 299) preprocessed frames -> ((N, 2048) pool features, (N, 1008) logits without bias)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = Linear(2048, NUM_CLASSES)

    def construct(self, x) -> Tuple[ms.Tensor, ms.Tensor]:
        x = max_pool_3x3_s2(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = max_pool_3x3_s2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        pool = x.mean((2, 3))
        return pool, ops.matmul(pool, self.fc.weight.T)


# ----------------------------------------------------------------------------------------------------------
def tf1_bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) float32 weights of TensorFlow 1.x's bilinear resize with align_corners=False:
    output i samples input i · size_in / size_out (no half-pixel offset), in float32 as torch-fidelity does."""
    src = np.arange(size_out, dtype=np.float32) * np.float32(size_in / size_out)
    lo = src.astype(np.int64)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = (src - lo.astype(np.float32)).astype(np.float32)
    m = np.zeros((size_out, size_in), np.float32)
    np.add.at(m, (np.arange(size_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(size_out), hi), frac)
    return m


def antialiased_bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of torch's antialiased bilinear resize (align_corners=False): a triangle
    filter around the half-pixel source centre, widened by the scale when shrinking, each row normalised."""
    scale = size_in / size_out
    support = max(scale, 1.0)
    m = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), size_in)
        j = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((j - centre + 0.5) / support))
        m[i, lo:hi] = w / w.sum()
    return m.astype(np.float32)


RESIZES = {"antialias": antialiased_bilinear_matrix, "tf1": tf1_bilinear_matrix}


def preprocess(frames: np.ndarray, resize: str = "antialias", size: int = INPUT_SIZE) -> np.ndarray:
    """(N, H, W, 3) uint8 frames -> (N, 3, size, size) float32, as torchmetrics' (``resize="antialias"``) or
    torch-fidelity's (``"tf1"``) InceptionV3 forward before its first convolution."""
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got {f.dtype} {f.shape}")
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {sorted(RESIZES)}, got {resize!r}")
    mh, mw = RESIZES[resize](f.shape[1], size), RESIZES[resize](f.shape[2], size)
    x = np.einsum("yh,nhwc,xw->ncyx", mh, f.astype(np.float32), mw, optimize=True)
    return ((x - 128.0) / 128.0).astype(np.float32)
