"""GroupNorm alone, on the UNet's largest shapes: our GroupNorm (two fused BatchNorm kernels), the LayerNorm
form it replaced (kept here as the "before"), MindSpore's nn.GroupNorm, and torch.nn.functional.group_norm.
Forward only, graph mode, best of 5 after one warm-up call, each framework in its own process.

    python -m benchmarks.bench_norm
"""
import argparse

import numpy as np

from benchmarks.common import append_section, best_of, emit, limit_threads, record, run_worker

GROUPS, EPS = 32, 1e-5
SHAPES = ((28, 320, 32, 32), (28, 640, 16, 16), (2, 320, 14, 32, 32))  # spatial levels 1-2 and a temporal block
REPEATS = 5


def _data(shape):
    g = np.random.default_rng(0)
    return (g.standard_normal(shape) * 2 + 1).astype(np.float32), g.standard_normal(shape[1]).astype(np.float32), \
        g.standard_normal(shape[1]).astype(np.float32)


def _best(fn):
    return best_of(fn, REPEATS)


def worker_mindspore():
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn, ops

    from exvideo_ms.backend import setup_device
    from exvideo_ms.nn.norm import GroupNorm
    setup_device("CPU", mode=0)

    class LayerNormForm(nn.Cell):
        """The previous implementation: LayerNorm statistics on (N, G, rest), broadcast multiply, bias_add."""

        def __init__(self, c, w, b):
            super().__init__()
            self.c = c
            self.weight, self.bias = Parameter(Tensor(w)), Parameter(Tensor(b))
            self.norm = ops.LayerNorm(begin_norm_axis=2, begin_params_axis=2, epsilon=EPS)

        def construct(self, x):
            h = x.reshape(x.shape[0], GROUPS, -1)
            size = h.shape[2]
            h, _, _ = self.norm(h, ops.ones((size,), ms.float32), ops.zeros((size,), ms.float32))
            h = h.reshape(x.shape[0], self.c, -1)
            h = ops.bias_add(h * ops.broadcast_to(self.weight.reshape(1, -1, 1), h.shape), self.bias)
            return h.reshape(x.shape)

    out = {}
    for shape in SHAPES:
        x, w, b = _data(shape)
        ours = GroupNorm(shape[1], EPS, GROUPS, "batch_norm")
        ours.weight.set_data(Tensor(w))
        ours.bias.set_data(Tensor(b))
        builtin = nn.GroupNorm(GROUPS, shape[1], EPS)
        builtin.gamma.set_data(Tensor(w))
        builtin.beta.set_data(Tensor(b))
        before = LayerNormForm(shape[1], w, b)
        tx = Tensor(x)
        row = {"ours": _best(lambda: ours(tx).asnumpy()), "layernorm form (before)": _best(lambda: before(tx).asnumpy())}
        if len(shape) == 4:  # nn.GroupNorm takes 4-D input only
            row["nn.GroupNorm"] = _best(lambda: builtin(tx).asnumpy())
        out[str(shape)] = row
    emit(out)


def worker_torch():
    import torch
    torch.set_num_threads(2)
    out = {}
    with torch.no_grad():
        for shape in SHAPES:
            x, w, b = (torch.from_numpy(a) for a in _data(shape))
            out[str(shape)] = {"torch": _best(lambda: torch.nn.functional.group_norm(x, GROUPS, w, b, EPS))}
    emit(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["ms", "torch"])
    a = p.parse_args()
    limit_threads()
    if a.worker == "ms":
        return worker_mindspore()
    if a.worker == "torch":
        return worker_torch()
    ms_res, torch_res = run_worker("benchmarks.bench_norm", ["ms"]), run_worker("benchmarks.bench_norm", ["torch"])
    lines = ["`python -m benchmarks.bench_norm` — GroupNorm forward, 32 groups, fp32, graph mode, best of "
             f"{REPEATS} (ms).", "", "| shape | ours | LayerNorm form (before) | nn.GroupNorm | torch | ours ÷ torch |",
             "|---|---|---|---|---|---|"]
    ratios = {}
    for shape in ms_res:
        m, t = ms_res[shape], torch_res[shape]["torch"]
        ratios[shape] = round(m["ours"] / t, 2)
        lines.append(f"| {shape} | {m['ours'] * 1e3:.1f} | {m['layernorm form (before)'] * 1e3:.1f} | "
                     + (f"{m['nn.GroupNorm'] * 1e3:.1f}" if "nn.GroupNorm" in m else "n/a (4-D only)")
                     + f" | {t * 1e3:.1f} | {ratios[shape]} |")
    append_section("GroupNorm alone", lines)
    record("norm", {"ratio_by_shape": ratios})


if __name__ == "__main__":
    main()
