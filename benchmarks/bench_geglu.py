"""GEGLU's value · GELU(gate) alone (exact GELU), on the full UNet's feed-forward shapes: our fused CPU kernel
(exvideo_ms/nn/geglu.cc), MindSpore's ops (split + erf, the path it replaced and the fallback), and PyTorch
(chunk + F.gelu, as diffusers). Forward, and forward + gradient, graph mode, best of 5 after a warm-up call,
each framework in its own process with 2 threads.

    python -m benchmarks.bench_geglu
"""
import argparse

import numpy as np

from benchmarks.common import append_section, best_of, emit, limit_threads, record, run_worker

# (rows, 2·inner): 14 frames × batch 2 of 32×32, 16×16 and 8×8 tokens at 320, 640, 1280 channels (inner = 4·C)
SHAPES = ((28672, 2560), (7168, 5120), (1792, 10240))
REPEATS = 5


def _data(shape):
    g = np.random.default_rng(0)
    return (g.standard_normal(shape) * 2).astype(np.float32), g.standard_normal((shape[0], shape[1] // 2)).astype(np.float32)


def _best(fn):
    return best_of(fn, REPEATS)


def worker_mindspore():
    from mindspore import Tensor, nn, ops

    from exvideo_ms.backend import setup_device
    from exvideo_ms.nn import geglu
    from exvideo_ms.nn.layers import gelu
    setup_device("CPU", mode=0)
    fused = geglu.fused_ops()
    if fused is None:
        raise SystemExit(f"the fused GEGLU kernel is not available: {geglu.failure()}")

    class Fused(nn.Cell):
        def construct(self, h):
            return fused[0](h)

    class Ops(nn.Cell):
        def construct(self, h):
            value, gate = ops.split(h, h.shape[-1] // 2, -1)
            return value * gelu(gate)

    class Grad(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.grad = ops.GradOperation(sens_param=True)(net)

        def construct(self, h, dout):
            return self.grad(h, dout)

    out = {}
    for shape in SHAPES:
        h, dout = (Tensor(a) for a in _data(shape))
        row = {}
        for name, net in (("fused", Fused()), ("ops", Ops())):
            row[name] = _best(lambda: net(h).asnumpy())
            back = Grad(net)
            row[name + " +grad"] = _best(lambda: back(h, dout).asnumpy())
        out[str(shape)] = row
    emit(out)


def worker_torch():
    import torch
    torch.set_num_threads(2)
    out = {}
    for shape in SHAPES:
        h, dout = (torch.from_numpy(a) for a in _data(shape))

        def forward(x):
            value, gate = x.chunk(2, dim=-1)
            return value * torch.nn.functional.gelu(gate)

        with torch.no_grad():
            row = {"torch": _best(lambda: forward(h))}

        def with_grad():
            x = h.detach().requires_grad_(True)
            forward(x).backward(dout)
            return x.grad
        row["torch +grad"] = _best(with_grad)
        out[str(shape)] = row
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
    ms_res, torch_res = run_worker("benchmarks.bench_geglu", ["ms"]), run_worker("benchmarks.bench_geglu", ["torch"])
    lines = ["`python -m benchmarks.bench_geglu` — value · GELU(gate) (exact GELU) on the UNet's feed-forward "
             f"shapes, fp32, graph mode, best of {REPEATS} (ms); +grad: forward and the input gradient.", "",
             "| (rows, 2·inner) | fused (ours) | ops (before) | torch | fused +grad | ops +grad | torch +grad | "
             "fused ÷ torch | +grad ÷ torch |", "|---|---|---|---|---|---|---|---|---|"]
    ratios = {}
    for shape in ms_res:
        m, t = ms_res[shape], torch_res[shape]
        ratios[shape] = [round(m["fused"] / t["torch"], 2), round(m["fused +grad"] / t["torch +grad"], 2)]
        lines.append(f"| {shape} | {m['fused'] * 1e3:.1f} | {m['ops'] * 1e3:.1f} | {t['torch'] * 1e3:.1f} | "
                     f"{m['fused +grad'] * 1e3:.1f} | {m['ops +grad'] * 1e3:.1f} | {t['torch +grad'] * 1e3:.1f} | "
                     f"{ratios[shape][0]} | {ratios[shape][1]} |")
    append_section("GEGLU alone", lines)
    record("geglu", {"ratio_by_shape": ratios})


if __name__ == "__main__":
    main()
