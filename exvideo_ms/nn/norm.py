"""GroupNorm and LayerNorm with the original checkpoints' parameter names (``weight``, ``bias``).

Both compute in float32 whatever the input dtype, as sgm's ``GroupNorm32`` does, and return the input dtype.
``FrozenBatchNorm``: the inference-only batch norm of the measuring networks (I3D, InceptionV3).
"""
import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import initializer

GROUP_NORM_IMPLS = ("batch_norm", "group_norm")  # backend.Choices.group_norm

# GroupNorm eps, following the original sgm code (reference/svd_architecture.md §3.8).
# UNet ResBlocks (spatial and temporal) and the UNet head: GroupNorm32 with torch's default 1e-5.
# diffusers uses 1e-6 in 72 of these norms; converting a diffusers folder keeps the original 1e-5.
UNET_RESBLOCK_EPS = 1e-5
# SpatialTransformer.norm: GroupNorm(32, C, eps=1e-6) in sgm and diffusers.
UNET_TRANSFORMER_EPS = 1e-6
# Autoencoder Normalize(): GroupNorm(32, C, eps=1e-6), encoder and decoder spatial layers and norm_out.
VAE_EPS = 1e-6
# VAE decoder temporal ResBlocks (time_stack) are openaimodel ResBlocks: GroupNorm32, eps 1e-5.
VAE_TEMPORAL_EPS = 1e-5
# nn.LayerNorm default in sgm attention blocks and OpenCLIP.
LAYER_NORM_EPS = 1e-5


class GroupNorm(nn.Cell):
    """torch.nn.GroupNorm over any (N, C, ...) input: statistics per sample and group over all other axes.

    A 5-D (B, C, T, H, W) input is normalised over (C/G, T, H, W), as torch does for the temporal blocks.
    ``impl`` (backend.Choices.group_norm) picks the kernels:

    - ``"batch_norm"`` (CPU): a training-mode BatchNorm on the (1, N·G, rest, 1) view takes each (sample, group)
      as a channel and normalises it with its own statistics, then an inference-mode BatchNorm on the
      (N, C, rest, 1) view with mean 0 and variance 1 − eps applies weight and bias per channel; both have
      exact gradients. Fastest on CPU (benchmarks/bench_norm.py), but it passes plain tensors where the
      ``ops.batch_norm`` docstring asks for Parameters in training mode, so it is used on CPU only, where it
      is measured equal to torch;
    - ``"group_norm"`` (elsewhere): ``ops.group_norm``, documented for Ascend, GPU and CPU.
    """

    def __init__(self, num_channels: int, eps: float, num_groups: int, impl: str):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: {num_channels} channels are not divisible into {num_groups} groups")
        if impl not in GROUP_NORM_IMPLS:
            raise ValueError(f"GroupNorm impl must be one of {GROUP_NORM_IMPLS}, got {impl!r}")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.impl = impl
        self.weight = Parameter(initializer("ones", (num_channels,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (num_channels,), ms.float32), name="bias")

    def construct(self, x):
        if self.impl == "group_norm":
            return ops.group_norm(x.astype(ms.float32), self.num_groups, self.weight.astype(ms.float32),
                                  self.bias.astype(ms.float32), self.eps).astype(x.dtype)
        shape = x.shape
        rows = shape[0] * self.num_groups
        h = x.astype(ms.float32).reshape(1, rows, -1, 1)
        h = ops.batch_norm(h, ops.zeros((rows,), ms.float32), ops.ones((rows,), ms.float32),
                           ops.ones((rows,), ms.float32), ops.zeros((rows,), ms.float32), training=True,
                           momentum=0.0, eps=self.eps)
        h = ops.batch_norm(h.reshape(shape[0], self.num_channels, -1, 1), ops.zeros((self.num_channels,), ms.float32),
                           ops.fill(ms.float32, (self.num_channels,), 1.0 - self.eps),
                           self.weight.astype(ms.float32), self.bias.astype(ms.float32), training=False, eps=self.eps)
        return h.reshape(shape).astype(x.dtype)


class LayerNorm(nn.Cell):
    """torch.nn.LayerNorm over the last axis."""

    def __init__(self, dim: int, eps: float = LAYER_NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(initializer("ones", (dim,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (dim,), ms.float32), name="bias")
        self.layer_norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x):
        y, _, _ = self.layer_norm(x.astype(ms.float32), self.weight.astype(ms.float32),
                                  self.bias.astype(ms.float32))
        return y.astype(x.dtype)


class FrozenBatchNorm(nn.Cell):
    """BatchNorm at inference (torch ``BatchNorm2d/3d`` in eval mode), for the measuring networks, which never
    train: (x − running_mean) / √(running_var + eps) · weight + bias over the channel axis 1 of any rank."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(ops.ones(channels, ms.float32), name="weight", requires_grad=False)
        self.bias = Parameter(ops.zeros(channels, ms.float32), name="bias", requires_grad=False)
        self.running_mean = Parameter(ops.zeros(channels, ms.float32), name="running_mean", requires_grad=False)
        self.running_var = Parameter(ops.ones(channels, ms.float32), name="running_var", requires_grad=False)

    def construct(self, x):
        scale = self.weight / ops.sqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * scale.reshape(shape).astype(x.dtype) + shift.reshape(shape).astype(x.dtype)
