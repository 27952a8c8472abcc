"""Thin constructors for the convolution and activation layers the original modules use."""
import math
from typing import Optional

from mindspore import nn, ops

from exvideo_ms import contracts
from exvideo_ms.backend import Choices

SQRT_HALF = 1.0 / math.sqrt(2.0)


class Linear(nn.Dense):
    """nn.Dense (weight (out, in), bias) that first casts its input to its weight dtype, so frozen low-precision
    layers and trainable float32 layers can follow each other (MindSpore promotes mixed-dtype sums).

    ``lora.add_lora`` may give it a LoRA branch: ``lora_A`` (in → r) and ``lora_B`` (r → out) Linear cells and
    ``lora_scale`` α/r, whose output, computed in their own dtype from the layer's input, is added in the
    layer's output dtype (PEFT's LoRA Linear)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lora_A = None
        self.lora_B = None
        self.lora_dropout = None
        self.lora_scale = 1.0

    def construct(self, x):
        inp = x
        if x.dtype != self.weight.dtype:
            x = x.astype(self.weight.dtype)
        shape = x.shape
        if len(shape) != 2:
            x = x.reshape(-1, shape[-1])
        x = self.matmul(x, self.weight)
        if self.has_bias:
            x = self.bias_add(x, self.bias)
        if len(shape) != 2:
            x = x.reshape(shape[:-1] + (x.shape[-1],))
        if self.lora_A is not None:
            branch = self.lora_B(self.lora_A(self.lora_dropout(inp)))
            x = x + (branch * self.lora_scale).astype(x.dtype)
        return x


class Conv2d(nn.Conv2d):
    """nn.Conv2d casting its input to its weight dtype (see ``Linear``)."""

    def construct(self, x):
        if x.dtype != self.weight.dtype:
            x = x.astype(self.weight.dtype)
        out = self.conv2d(x, self.weight)
        if self.has_bias:
            out = self.bias_add(out, self.bias)
        return out


class Conv3d(nn.Conv3d):
    """nn.Conv3d (groups = 1) computing in ``compute_dtype`` when given (the backend's Conv3d dtype: float16 on
    Ascend, see backend.py), else in its weight dtype; the weights stay as they are (float32 masters of
    trainable convs included) and the result comes back in the weight dtype. ``check_ascend``: assert the
    Ascend contract on every call (contracts.check_conv3d), for networks built with emulated Ascend choices."""

    def __init__(self, *args, compute_dtype=None, check_ascend: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.compute_dtype = compute_dtype
        self.check_ascend = check_ascend

    def construct(self, x):
        dtype = self.weight.dtype if self.compute_dtype is None else self.compute_dtype
        weight = self.weight if self.weight.dtype == dtype else self.weight.astype(dtype)
        if x.dtype != dtype:
            x = x.astype(dtype)
        if self.check_ascend:
            contracts.check_conv3d(x, weight)
        out = self.conv3d(x, weight)
        if self.has_bias:
            out = self.bias_add(out, self.bias.astype(dtype))
        return out if out.dtype == self.weight.dtype else out.astype(self.weight.dtype)


def conv2d(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True) -> Conv2d:
    """torch.nn.Conv2d(cin, cout, kernel, stride, padding) with zero padding."""
    if padding:
        return Conv2d(cin, cout, kernel, stride=stride, pad_mode="pad", padding=padding, has_bias=bias)
    return Conv2d(cin, cout, kernel, stride=stride, pad_mode="valid", has_bias=bias)


def conv3d_precision(choices: Choices) -> dict:
    """The Conv3d keyword arguments for ``choices``: its compute dtype, and the contract check when emulated."""
    return dict(compute_dtype=choices.dtype("conv3d_dtype"),
                check_ascend=choices.emulated and choices.device == "Ascend")


def conv3d(cin: int, cout: int, kernel, choices: Choices, padding=None, bias: bool = True) -> Conv3d:
    """torch.nn.Conv3d(cin, cout, kernel, padding=[k // 2 ...]) with zero padding ("same" for odd kernels),
    computing in the backend's Conv3d dtype."""
    kernel = tuple(kernel) if isinstance(kernel, (tuple, list)) else (kernel,) * 3
    pad = tuple(padding) if padding is not None else tuple(k // 2 for k in kernel)
    precision = conv3d_precision(choices)
    if any(pad):
        return Conv3d(cin, cout, kernel, pad_mode="pad",
                      padding=(pad[0], pad[0], pad[1], pad[1], pad[2], pad[2]), has_bias=bias, **precision)
    return Conv3d(cin, cout, kernel, pad_mode="valid", has_bias=bias, **precision)


def gelu(x):
    """Exact (erf) GELU, as torch.nn.GELU() / F.gelu; written out because nn.GELU(approximate=False)
    keeps large temporary buffers in CPU graph mode."""
    return 0.5 * x * (1.0 + ops.erf(x * SQRT_HALF))


def silu(x):
    return ops.silu(x)


class SiLU(nn.Cell):
    def construct(self, x):
        return ops.silu(x)


class Identity(nn.Cell):
    """Stands in for parameter-free slots of the original Sequentials (Dropout(p=0))."""

    def construct(self, x):
        return x


def nearest_upsample2x(x):
    """F.interpolate(x, scale_factor=2, mode="nearest") on (N, C, H, W) by broadcasting (exact)."""
    n, c, h, w = x.shape
    x = ops.broadcast_to(x.reshape(n, c, h, 1, w, 1), (n, c, h, 2, w, 2))
    return x.reshape(n, c, 2 * h, 2 * w)


class Upsample(nn.Cell):
    """Nearest ×2, then conv 3×3 (``conv``): sgm's ``Upsample`` in the UNet and the VAE decoder alike."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv2d(channels, channels, 3, padding=1)

    def construct(self, x):
        return self.conv(nearest_upsample2x(x))


def row_spans(rows: int, bytes_per_row: int, budget: int, max_rows: Optional[int] = None):
    """Split ``rows`` into consecutive (start, end) spans whose temporaries stay within ``budget`` bytes (and
    that hold at most ``max_rows`` rows each)."""
    per = max(1, budget // max(1, bytes_per_row))
    if max_rows is not None:
        per = min(per, max_rows)
    return tuple((i, min(i + per, rows)) for i in range(0, rows, per))


def map_rows(fn, x, bytes_per_row: int, budget: int):
    """fn(x) computed on slices of x's first axis when the whole would exceed ``budget`` (exact for any fn
    that treats rows independently)."""
    spans = row_spans(x.shape[0], bytes_per_row, budget)
    if len(spans) == 1:
        return fn(x)
    parts = []
    for start, end in spans:
        parts.append(fn(x[start:end]))
    return ops.cat(parts, 0)
