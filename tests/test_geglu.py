"""The fused CPU GEGLU kernel (exvideo_ms/nn/geglu.cc): value · GELU(gate) and its gradient against float64
references, in graph and PyNative mode, and the MindSpore-ops path that replaces it elsewhere."""
import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor
from scipy.special import erf

from exvideo_ms.nn import geglu
from exvideo_ms.nn.transformer import GEGLU


def reference(h, dout):
    """float64 value, d/dh of sum(dout · value · GELU(gate))."""
    h = h.astype(np.float64)
    inner = h.shape[-1] // 2
    v, g = h[..., :inner], h[..., inner:]
    cdf = 0.5 * (1 + erf(g / np.sqrt(2)))
    pdf = np.exp(-0.5 * g * g) / np.sqrt(2 * np.pi)
    return v * g * cdf, np.concatenate([dout * g * cdf, dout * v * (cdf + g * pdf)], -1)


class _Weighted(ms.nn.Cell):
    def __init__(self, op, weight):
        super().__init__()
        self.op, self.weight = op, weight

    def construct(self, x):
        return (self.op(x) * self.weight).sum()


def kernel():
    ops = geglu.fused_ops()
    if ops is None:
        pytest.skip(f"fused GEGLU kernel not built on this machine: {geglu.failure()}")
    return ops


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
@pytest.mark.parametrize("shape", [(3, 5, 2 * 37), (2, 300, 2 * 64)])  # odd width (vector tails); > 64 rows (threads)
def test_fused_value_and_gradient_match_float64(mode, shape):
    forward, _ = kernel()
    g = np.random.default_rng(sum(shape))
    h = (g.standard_normal(shape) * 4).astype(np.float32)  # gates far into both tails
    h[0, 0, -1], h[0, 1, -1] = 12.0, -12.0
    dout = g.standard_normal(shape[:-1] + (shape[-1] // 2,)).astype(np.float32)
    want, want_grad = reference(h, dout)
    ms.set_context(mode=mode)
    try:
        got = forward(Tensor(h)).asnumpy()
        grad = ms.grad(_Weighted(forward, Tensor(dout)))(Tensor(h)).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert got.dtype == np.float32 and got.shape == want.shape
    # float32 rounding (1e-6 relative) plus the erf approximation's 1.5e-7, scaled by what multiplies it
    inner = shape[-1] // 2
    v, gate = np.abs(h[..., :inner]), np.abs(h[..., inner:])
    assert np.all(np.abs(got - want) <= 1e-6 * np.abs(want) + 1e-7 * v * gate + 1e-7)
    d = np.abs(dout)
    bound = np.concatenate([1e-7 * d * gate, 1e-7 * d * v * (1 + gate)], -1)
    assert np.all(np.abs(grad - want_grad) <= 1e-6 * np.abs(want_grad) + bound + 1e-7)


def test_cell_uses_the_kernel_on_cpu_float32_and_ops_otherwise():
    kernel()
    fused = GEGLU(16, 24, "fused")
    plain = GEGLU(16, 24, "ops")
    assert fused.fused is not None and plain.fused is None
    plain.proj.weight.set_data(fused.proj.weight.value())
    plain.proj.bias.set_data(fused.proj.bias.value())
    x = Tensor(np.random.default_rng(0).standard_normal((2, 7, 16)).astype(np.float32))
    a, b = fused(x).asnumpy(), plain(x).asnumpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)
    h = fused.proj(x).asnumpy()
    want, _ = reference(h, np.zeros(a.shape, np.float32))
    np.testing.assert_allclose(b, want, rtol=1e-5, atol=2e-6)
    fused.to_float(ms.float16)  # a float16 projection output takes the ops path and keeps its dtype
    fused.proj.to_float(ms.float16)
    half = fused(x)
    assert half.dtype == ms.float16
    np.testing.assert_allclose(half.asnumpy().astype(np.float32), a, atol=2e-2)


def test_a_missing_compiler_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(RuntimeError, match="no-such-compiler-xyz"):
        geglu.build(tmp_path)


def test_a_library_outside_the_aot_white_list_falls_back_with_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(geglu, "_OPS", None)
    monkeypatch.setattr(geglu, "_FAILURE", None)
    monkeypatch.setenv("MS_CUSTOM_AOT_WHITE_LIST", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="exvideo_ms.nn.geglu"):
        assert geglu.fused_ops() is None
    assert "MS_CUSTOM_AOT_WHITE_LIST" in geglu.failure() and "fused GEGLU kernel unavailable" in caplog.text
