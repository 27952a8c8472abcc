"""GroupNorm (both kernels: two BatchNorms on CPU, ops.group_norm elsewhere; exvideo_ms/nn/norm.py) against
torch.nn.functional.group_norm: outputs and the gradients of input, weight and bias, on the 4-D and 5-D shapes
the networks use, in PyNative and graph mode, with inputs far from zero mean (where a one-pass variance would
cancel)."""
import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import Tensor, nn, ops

from exvideo_ms.nn.norm import GROUP_NORM_IMPLS, GroupNorm
from tests.helpers import rel_err

SHAPES = [(3, 32, 6, 5), (2, 16, 4, 3, 5)]  # (N, C, H, W) spatial; (B, C, T, H, W) temporal blocks


class _Loss(nn.Cell):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def construct(self, x, probe):
        return (self.norm(x) * probe).sum()


def _data(shape, seed):
    g = np.random.default_rng(seed)
    c = shape[1]
    x = (g.standard_normal(shape) * 3 + 20).astype(np.float32)  # large offset: a one-pass E[x²]−E[x]² would cancel
    return x, g.standard_normal(shape).astype(np.float32), g.standard_normal(c).astype(np.float32), \
        g.standard_normal(c).astype(np.float32)


@pytest.mark.parametrize("impl", GROUP_NORM_IMPLS)
@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
@pytest.mark.parametrize("shape", SHAPES)
def test_groupnorm_and_its_gradients_match_torch(shape, mode, impl):
    ms.set_context(mode=mode)
    x, probe, w, b = _data(shape, 0)
    groups, eps = 8, 1e-5
    norm = GroupNorm(shape[1], eps, groups, impl)
    norm.weight.set_data(Tensor(w))
    norm.bias.set_data(Tensor(b))
    loss = _Loss(norm)
    grad = ops.value_and_grad(loss, grad_position=0, weights=loss.trainable_params())
    (_, (gx, (gw, gb))) = grad(Tensor(x), Tensor(probe))
    out = norm(Tensor(x)).asnumpy()

    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ref = torch.nn.functional.group_norm(tx, groups, tw, tb, eps)
    (ref * torch.tensor(probe, dtype=torch.float64)).sum().backward()
    assert rel_err(out, ref.detach().numpy()) < 1e-5
    for name, mine, theirs in (("input", gx, tx.grad), ("weight", gw, tw.grad), ("bias", gb, tb.grad)):
        assert rel_err(mine.asnumpy(), theirs.numpy()) < 1e-4, name


@pytest.mark.parametrize("impl", GROUP_NORM_IMPLS)
def test_groupnorm_keeps_a_float16_input_dtype_and_computes_in_float32(impl):
    x, _, w, b = _data((2, 16, 4, 4), 1)
    norm = GroupNorm(16, 1e-6, 4, impl)
    norm.weight.set_data(Tensor(w))
    norm.bias.set_data(Tensor(b))
    out = norm(Tensor(x).astype(ms.float16))
    assert out.dtype == ms.float16
    ref = torch.nn.functional.group_norm(torch.tensor(x).half().double(), 4, torch.tensor(w).double(),
                                         torch.tensor(b).double(), 1e-6).numpy()
    assert rel_err(out.asnumpy().astype(np.float64), ref) < 2e-3  # the float16 rounding of the output only


def test_groupnorm_rejects_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="48 channels are not divisible into 32 groups"):
        GroupNorm(48, 1e-5, 32, "batch_norm")
