"""What a compiled MindSpore graph itself holds in memory on CPU (issue 23): the resident memory a process keeps
after compiling a graph, with freed heap returned to the system (``malloc_trim``), for

- chains of N identical kernels (Add, MatMul 64×64, Reshape pairs): the cost per kernel;
- the mid-size UNet's denoising loss (bench_train's forward, 2 frames) at two widths: the cost per graph, against
  the size of its weights.

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
WIDTHS = (64, 160)  # model channels of the UNet measured (bench_train's mid-size is 160)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _trimmed_rss_mib() -> float:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return _rss_mib()


def worker_chain(kind: str) -> dict:
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn, ops
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")

    class Chain(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = ms.Parameter(Tensor(np.full((64, 64), 0.01, np.float32)), name="w")
            self.matmul = ops.MatMul(transpose_b=True)

        def construct(self, x):
            for _ in range(CHAIN):
                if kind == "add":
                    x = x + 1.0
                elif kind == "matmul":
                    x = self.matmul(x, self.w)
                else:
                    x = x.reshape(32, 128).reshape(64, 64)
            return x
    net, x = Chain(), Tensor(np.ones((64, 64), np.float32))
    before = _trimmed_rss_mib()
    net.compile(x)
    compiled = _trimmed_rss_mib()
    net(x).asnumpy()
    kernels = CHAIN * (2 if kind == "reshape" else 1)
    return dict(kind=kind, kernels=kernels, compiled_mib=compiled - before, after_run_mib=_trimmed_rss_mib() - before)


def worker_unet(width: int) -> dict:
    import benchmarks.bench_train as bench
    bench.MID_WIDTH = width
    unet, _, loss, args = bench.mindspore_setup(2, 16, "fp32", "exvideo", False)
    weights = sum(p.nbytes for p in unet.get_parameters()) / 2 ** 20
    before = _trimmed_rss_mib()
    loss.compile(*args)
    compiled = _trimmed_rss_mib()
    float(loss(*args)[0].asnumpy())
    return dict(width=width, weights_mib=weights, compiled_mib=compiled - before,
                after_run_mib=_trimmed_rss_mib() - before)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["chain", "unet"])
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--width", type=int)
    a = p.parse_args()
    if a.worker:
        limit_threads()
        emit(worker_chain(a.kind) if a.worker == "chain" else worker_unet(a.width))
        return
    chains = [run_worker("benchmarks.graph_memory", ["chain", "--kind", k]) for k in KINDS]
    unets = [run_worker("benchmarks.graph_memory", ["unet", "--width", str(w)], timeout=3600) for w in WIDTHS]
    lines = ["`python -m benchmarks.graph_memory` — resident memory a MindSpore process keeps after compiling a graph "
             "(graph mode, CPU, freed heap returned with malloc_trim), each measurement in its own process.", "",
             "| graph | kernels | weights (MiB) | kept after compiling (MiB) | kept after one run (MiB) | per kernel (KiB) |",
             "|---|---|---|---|---|---|"]
    for c in chains:
        lines.append(f"| chain of {c['kind']} (64×64 fp32) | {c['kernels']} | 0 | {c['compiled_mib']:.0f} | "
                     f"{c['after_run_mib']:.0f} | {1024 * c['after_run_mib'] / c['kernels']:.0f} |")
    for u in unets:
        lines.append(f"| UNet denoising loss, width {u['width']}, 2 frames, forward only | — | {u['weights_mib']:.0f} | "
                     f"{u['compiled_mib']:.0f} | {u['after_run_mib']:.0f} | — |")
    append_section("What a compiled graph holds (MindSpore, CPU)", lines)


if __name__ == "__main__":
    main()
