"""The OpenCLIP ViT-H/14 vision tower that embeds SVD's conditioning image (sgm
``FrozenOpenCLIPImageEmbedder``; open_clip ``transformer.VisionTransformer``), with open_clip's parameter
names (``conv1``, ``class_embedding``, ``transformer.resblocks.i.attn.in_proj_weight``, ``proj`` ...).

``preprocess`` reproduces the embedder's input path exactly: image in [-1, 1] -> antialiased resize to
224×224 (Gaussian blur, then bicubic with align_corners=True, as kornia / diffusers) -> [0, 1] -> CLIP
mean/std. It runs in NumPy once per video, outside the compiled graph.
"""

import mindspore as ms
import numpy as np
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Normal, initializer

from exvideo_ms.backend import Choices
from exvideo_ms.config import ImageEncoderConfig
from exvideo_ms.nn.attention import MultiheadAttention
from exvideo_ms.nn.layers import Linear, conv2d, gelu
from exvideo_ms.nn.norm import LayerNorm

# OpenAI CLIP normalisation (open_clip OPENAI_DATASET_MEAN / _STD), used by sgm's image embedder
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC_A = -0.75  # torch's bicubic kernel coefficient


class MLP(nn.Cell):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = Linear(width, hidden)
        self.c_proj = Linear(hidden, width)

    def construct(self, x):
        return self.c_proj(gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Cell):
    def __init__(self, width: int, heads: int, mlp_width: int, choices: Choices, kind: str = "image"):
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = MultiheadAttention(width, heads, choices=choices, kind=kind)
        self.ln_2 = LayerNorm(width)
        self.mlp = MLP(width, mlp_width)

    def construct(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Cell):
    """OpenCLIP's pre-norm transformer; ``kind`` "text" makes every attention causal (the text tower)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_width: int, choices: Choices, kind: str = "image"):
        super().__init__()
        self.resblocks = nn.CellList([ResidualAttentionBlock(width, heads, mlp_width, choices, kind)
                                      for _ in range(layers)])

    def construct(self, x):
        for block in self.resblocks:
            x = block(x)
        return x


class ImageEncoder(nn.Cell):
    """pixels (N, 3, 224, 224), CLIP-normalised -> image embedding (N, output_dim); no L2 normalisation."""

    def __init__(self, cfg: ImageEncoderConfig, *, choices: Choices):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        grid = cfg.image_size // cfg.patch_size
        w = cfg.width
        self.conv1 = conv2d(3, w, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = Parameter(initializer(Normal(w ** -0.5), (w,), ms.float32), name="class_embedding")
        self.positional_embedding = Parameter(initializer(Normal(w ** -0.5), (grid * grid + 1, w), ms.float32),
                                              name="positional_embedding")
        self.ln_pre = LayerNorm(w)
        self.transformer = Transformer(w, cfg.layers, cfg.heads, cfg.mlp_width, choices)
        self.ln_post = LayerNorm(w)
        self.proj = Parameter(initializer(Normal(w ** -0.5), (w, cfg.output_dim), ms.float32), name="proj")

    def construct(self, pixels):
        dtype = self.conv1.weight.dtype
        x = self.conv1(pixels.astype(dtype))  # (N, W, g, g)
        n, w = x.shape[0], x.shape[1]
        x = ops.transpose(x.reshape(n, w, -1), (0, 2, 1))
        cls = ops.broadcast_to(self.class_embedding.astype(dtype).reshape(1, 1, w), (n, 1, w))
        x = ops.cat([cls, x], 1) + self.positional_embedding.astype(dtype)
        x = self.transformer(self.ln_pre(x))
        pooled = self.ln_post(x[:, 0])
        return ops.matmul(pooled, self.proj.astype(dtype)).astype(ms.float32)

    def attention_calls(self, images: int):
        tokens = (self.cfg.image_size // self.cfg.patch_size) ** 2 + 1  # patches and the class token
        return [block.attn.call(images, tokens) for block in self.transformer.resblocks]


# ----------------------------------------------------------------------------------------------------------
# preprocessing (NumPy, float32)
def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float32) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    g = np.exp(-(x ** 2) / np.float32(2.0 * sigma ** 2))
    return (g / g.sum()).astype(np.float32)


def _blur_axis(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    pad = [(0, 0)] * x.ndim
    k = len(kernel)
    pad[axis] = (k // 2, k // 2) if k % 2 else (k // 2, k // 2 - 1)
    xp = np.pad(x, pad, mode="reflect")
    out = np.zeros_like(x)
    n = x.shape[axis]
    for i, wgt in enumerate(kernel):
        out += wgt * np.take(xp, np.arange(i, i + n), axis=axis)
    return out


def _cubic(t: np.ndarray) -> np.ndarray:
    """torch's bicubic convolution weights for the 4 taps at offsets -1, 0, 1, 2 (t in [0, 1))."""
    a = BICUBIC_A

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], -1).astype(np.float32)


def _bicubic_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """F.interpolate(mode="bicubic", align_corners=True) along one axis (indices clamped at the borders)."""
    n = x.shape[axis]
    scale = (n - 1) / (size - 1) if size > 1 else 0.0
    src = np.arange(size, dtype=np.float32) * np.float32(scale)
    i0 = np.floor(src).astype(np.int64)
    wts = _cubic((src - i0).astype(np.float32))  # (size, 4)
    out = 0.0
    for tap in range(4):
        idx = np.clip(i0 - 1 + tap, 0, n - 1)
        shape = [1] * x.ndim
        shape[axis] = size
        out = out + np.take(x, idx, axis=axis) * wts[:, tap].reshape(shape)
    return out.astype(np.float32)


def resize_antialiased(x: np.ndarray, size=(224, 224)) -> np.ndarray:
    """diffusers ``_resize_with_antialiasing`` (kornia's antialiased resize): x (N, C, H, W) float32."""
    h, w = x.shape[-2:]
    sigmas = (max((h / size[0] - 1.0) / 2.0, 0.001), max((w / size[1] - 1.0) / 2.0, 0.001))
    ks = [int(max(2.0 * 2 * s, 3)) for s in sigmas]
    ks = [k + 1 if k % 2 == 0 else k for k in ks]
    x = x.astype(np.float32)
    x = _blur_axis(x, _gaussian_kernel(ks[1], sigmas[1]), axis=-1)
    x = _blur_axis(x, _gaussian_kernel(ks[0], sigmas[0]), axis=-2)
    x = _bicubic_axis(x, size[0], axis=-2)
    return _bicubic_axis(x, size[1], axis=-1)


def preprocess(images: np.ndarray, image_size: int = 224) -> np.ndarray:
    """images (N, 3, H, W) in [-1, 1] -> CLIP input (N, 3, S, S) float32."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {images.shape}")
    x = resize_antialiased(images.astype(np.float32), (image_size, image_size))
    x = (x + 1.0) / 2.0
    mean = np.asarray(CLIP_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(CLIP_STD, np.float32).reshape(1, 3, 1, 1)
    return ((x - mean) / std).astype(np.float32)
