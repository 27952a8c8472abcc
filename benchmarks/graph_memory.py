"""What a compiled MindSpore graph itself holds in memory on CPU (issue 23): the resident memory a process keeps
after compiling a graph, with freed heap returned to the system (``malloc_trim``), for

- chains of N identical kernels (Add, MatMul, Reshape pairs on 64×64; Add also on 256×256): the cost per kernel,
  and whether it grows with the tensors;
- the mid-size UNet's denoising loss (bench_train's forward, 2 frames) at two widths: the cost per graph, against
  the size of its weights; at width 64 also with the runtime's memory reuse on
  (``mindspore.runtime.set_memory(optimize_level="O1")``, documented for Ascend, GPU and CPU).

Each measurement runs in its own process. PyTorch has no compiled graph here (eager autograd), so there is no
PyTorch column: this explains the MindSpore side of profile_train's memory rows.

    python -m benchmarks.graph_memory
"""
import argparse
import ctypes
import os

from benchmarks.common import append_section, emit, limit_threads, run_worker

CHAIN = 200  # kernels per chain (MindSpore's call-depth limit is 1000 nested calls)
KINDS = ("add", "matmul", "reshape")
CHAINS = (("add", 64), ("matmul", 64), ("reshape", 64), ("add", 256))  # (kind, side of the square fp32 tensor)
UNETS = ((64, "O0"), (160, "O0"), (64, "O1"))  # (model channels: bench_train's mid-size is 160, memory optimize level)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _trimmed_rss_mib() -> float:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return _rss_mib()


def worker_chain(kind: str, side: int) -> dict:
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn, ops
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")

    class Chain(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = ms.Parameter(Tensor(np.full((side, side), 0.01, np.float32)), name="w")
            self.matmul = ops.MatMul(transpose_b=True)

        def construct(self, x):
            for _ in range(CHAIN):
                if kind == "add":
                    x = x + 1.0
                elif kind == "matmul":
                    x = self.matmul(x, self.w)
                else:
                    x = x.reshape(side // 2, side * 2).reshape(side, side)
            return x
    net, x = Chain(), Tensor(np.ones((side, side), np.float32))
    before = _trimmed_rss_mib()
    net.compile(x)
    compiled = _trimmed_rss_mib()
    net(x).asnumpy()
    kernels = CHAIN * (2 if kind == "reshape" else 1)
    return dict(kind=kind, side=side, kernels=kernels, compiled_mib=compiled - before, after_run_mib=_trimmed_rss_mib() - before)


def worker_unet(width: int, memory_level: str) -> dict:
    import mindspore as ms

    import benchmarks.bench_train as bench
    ms.runtime.set_memory(optimize_level=memory_level)
    bench.MID_WIDTH = width
    unet, _, loss, args = bench.mindspore_setup(2, 16, "fp32", "exvideo", False)
    weights = sum(p.nbytes for p in unet.get_parameters()) / 2 ** 20
    before = _trimmed_rss_mib()
    loss.compile(*args)
    compiled = _trimmed_rss_mib()
    float(loss(*args)[0].asnumpy())
    return dict(width=width, memory_level=memory_level, weights_mib=weights, compiled_mib=compiled - before,
                after_run_mib=_trimmed_rss_mib() - before)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["chain", "unet"])
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--side", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--memory_level", choices=["O0", "O1"])
    a = p.parse_args()
    if a.worker:
        limit_threads()
        emit(worker_chain(a.kind, a.side) if a.worker == "chain" else worker_unet(a.width, a.memory_level))
        return
    chains = [run_worker("benchmarks.graph_memory", ["chain", "--kind", k, "--side", str(n)]) for k, n in CHAINS]
    unets = [run_worker("benchmarks.graph_memory", ["unet", "--width", str(w), "--memory_level", m], timeout=3600)
             for w, m in UNETS]
    lines = ["`python -m benchmarks.graph_memory` — resident memory a MindSpore process keeps after compiling a graph "
             "(graph mode, CPU, freed heap returned with malloc_trim), each measurement in its own process.", "",
             "| graph | kernels | weights (MiB) | kept after compiling (MiB) | kept after one run (MiB) | per kernel (KiB) |",
             "|---|---|---|---|---|---|"]
    for c in chains:
        lines.append(f"| chain of {c['kind']} ({c['side']}×{c['side']} fp32) | {c['kernels']} | 0 | {c['compiled_mib']:.0f} | "
                     f"{c['after_run_mib']:.0f} | {1024 * c['after_run_mib'] / c['kernels']:.0f} |")
    for u in unets:
        reuse = ", memory optimize level O1" if u["memory_level"] == "O1" else ""
        lines.append(f"| UNet denoising loss, width {u['width']}, 2 frames, forward only{reuse} | — | {u['weights_mib']:.0f} | "
                     f"{u['compiled_mib']:.0f} | {u['after_run_mib']:.0f} | — |")
    append_section("What a compiled graph holds (MindSpore, CPU)", lines)


if __name__ == "__main__":
    main()
