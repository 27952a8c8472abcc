"""Where a training step's time and memory go, MindSpore and PyTorch side by side (issue 23): bench_train's
mid-size step cut into phases, each phase in its own process (peak RSS is per process), with and without
recompute (PyTorch: gradient checkpointing).

| phase | MindSpore (graph mode) | PyTorch |
|---|---|---|
| forward | the denoising loss, compiled alone | the loss under ``torch.no_grad()`` |
| grad | ``ops.value_and_grad`` of the loss over the trainable set, compiled alone | ``loss().backward()`` |
| step | train.py's ``TrainStep`` (loss scale, AdamW) | backward + ``torch.optim.AdamW`` |

Memory rows: the weights, gradients and AdamW moments are counted from the tensors; "after build" is the RSS
once the network exists; each phase's peak RSS above it is what the phase adds (activations kept for the
backward pass, temporaries, gradients, optimizer state and, for MindSpore, the compiled graph). Times: the
first call (MindSpore: graph compilation included) and the mean of the rest.

    python -m benchmarks.profile_train [--mode exvideo] [--frames 8] [--size 16] [--steps 3]

``--recompute_only`` runs only the grad phase, with and without recompute: the activation memory recompute saves
(e.g. ``--frames 16 --size 32 --steps 2``, where activations outweigh the compiled graph).
"""
import argparse
import gc
import os
import threading
import time

import numpy as np

from benchmarks.bench_train import MODES, mindspore_setup, torch_setup
from benchmarks.common import Timer, append_section, emit, limit_threads, peak_rss_gib, run_worker

PHASES = ("forward", "grad", "step")
GIB = 2 ** 30


SAMPLE_SECONDS = 0.005  # RSS sampling period during the steady calls


def current_rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB


class RssSampler:
    """Highest current RSS while the block runs (the process's peak RSS cannot be reset after compilation)."""

    def __enter__(self):
        self.peak, self._stop = current_rss_gib(), threading.Event()

        def poll():
            while not self._stop.is_set():
                self.peak = max(self.peak, current_rss_gib())
                time.sleep(SAMPLE_SECONDS)
        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_gib())


def _time(fn, steps: int):
    """Times of ``steps`` calls, the peak RSS up to the end of the first (compilation included) and the highest
    RSS sampled during the others."""
    times = []
    with Timer() as t:
        fn()
    times.append(t.seconds)
    first_peak = peak_rss_gib()
    gc.collect()
    with RssSampler() as sampler:
        for _ in range(steps - 1):
            with Timer() as t:
                fn()
            times.append(t.seconds)
            gc.collect()
    return times, first_peak, sampler.peak


def worker_mindspore(phase: str, recompute: bool, frames: int, size: int, steps: int, mode: str) -> dict:
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    from exvideo_ms.train.optim import AdamW
    from exvideo_ms.train.step import LossScaleOptions, TrainStep
    unet, trainable, loss, args = mindspore_setup(frames, size, "fp32", mode, recompute)
    built = peak_rss_gib()
    if phase == "forward":
        class Forward(nn.Cell):
            def __init__(self):
                super().__init__()
                self.loss = loss

            def construct(self, *inputs):
                return self.loss(*inputs)[0]
        cell = Forward()
        run = lambda: float(cell(*args).asnumpy())  # noqa: E731
    elif phase == "grad":
        class Grad(nn.Cell):
            def __init__(self):
                super().__init__()
                self.value_and_grad = ops.value_and_grad(loss, None, weights=ms.ParameterTuple(trainable), has_aux=True)

            def construct(self, *inputs):
                (value, _), grads = self.value_and_grad(*inputs)
                return value, grads
        cell = Grad()
        run = lambda: float(cell(*args)[0].asnumpy())  # noqa: E731
    else:
        cell = TrainStep(loss, AdamW(trainable), LossScaleOptions())
        lr = Tensor(1e-5, ms.float32)
        run = lambda: float(cell(lr, True, *args)[0].asnumpy())  # noqa: E731
    cell.set_train(True)
    return _result(*_time(run, steps), built, unet.get_parameters(), trainable, lambda p: p.nbytes)


def worker_torch(phase: str, recompute: bool, frames: int, size: int, steps: int, mode: str) -> dict:
    import torch
    unet, trainable, loss = torch_setup(frames, size, mode, recompute)
    built = peak_rss_gib()
    opt = torch.optim.AdamW(trainable, lr=1e-5) if phase == "step" else None

    def run():
        if phase == "forward":
            with torch.no_grad():
                return float(loss())
        value = loss()
        for p in trainable:
            p.grad = None
        value.backward()
        if opt is not None:
            opt.step()
        return float(value)
    return _result(*_time(run, steps), built, unet.parameters(), trainable, lambda p: p.numel() * p.element_size())


def _result(times, first_peak, steady_peak, built, params, trainable, nbytes) -> dict:
    trainable_bytes = sum(nbytes(p) for p in trainable)
    return dict(first=times[0], steady=float(np.mean(times[1:])), built=built, first_peak=first_peak,
                steady_peak=steady_peak,
                weights=sum(nbytes(p) for p in params) / GIB, trainable=trainable_bytes / GIB,
                moments=2 * trainable_bytes / GIB)  # AdamW: two fp32 moments per trainable element (both sides)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["ms", "torch"])
    p.add_argument("--phase", choices=PHASES)
    p.add_argument("--recompute", type=int, choices=[0, 1])
    p.add_argument("--mode", default="exvideo", choices=[m for m in MODES if m != "lora"])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=16, help="latent size, pixels / 8")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--recompute_only", action="store_true", help="only the grad phase, with and without recompute")
    a = p.parse_args()
    if a.steps < 2:
        p.error(f"--steps must be at least 2 (the first call and a steady one), got {a.steps}")
    common = ["--mode", a.mode, "--frames", str(a.frames), "--size", str(a.size), "--steps", str(a.steps)]
    if a.worker:
        limit_threads()
        fn = worker_mindspore if a.worker == "ms" else worker_torch
        emit(fn(a.phase, bool(a.recompute), a.frames, a.size, a.steps, a.mode))
        return
    if a.recompute_only:
        return recompute_table(a, common)
    res = {(fw, rc, ph): run_worker("benchmarks.profile_train", [fw, "--phase", ph, "--recompute", str(rc),
                                                                  *common], timeout=7200)
           for rc in (1, 0) for fw in ("ms", "torch") for ph in PHASES}
    names = {"ms": "MindSpore", "torch": "PyTorch"}
    lines = [f"`python -m benchmarks.profile_train --mode {a.mode}` — bench_train's mid-size step ({a.mode} mode, "
             f"{a.frames} frames, {a.size * 8}×{a.size * 8}, batch 1, fp32) cut into phases, each in its own process. "
             "Counted: weights, gradients (= the trainable weights) and AdamW moments. Measured: RSS once the network is "
             "built; per phase, the highest RSS sampled during the steady calls above it (\"steady\") and the peak up "
             "to the end of the first call above it (\"first\": MindSpore compiles then); steady time = mean of calls "
             "2.., first call − steady ≈ compilation.", "",
             "| recompute | framework | weights (GiB) | gradients | AdamW moments | RSS built | forward: steady / first "
             "| grad: steady / first | step: steady / first | forward (s) | forward+backward (s) | step (s) | "
             "step's first call (s) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def above(r):
        return f"{r['steady_peak'] - r['built']:.2f} / {r['first_peak'] - r['built']:.2f}"
    for rc in (1, 0):
        for fw in ("ms", "torch"):
            f, g, s = (res[(fw, rc, ph)] for ph in PHASES)
            lines.append(f"| {'on' if rc else 'off'} | {names[fw]} | {s['weights']:.2f} | {s['trainable']:.2f} | "
                         f"{s['moments']:.2f} | {s['built']:.2f} | {above(f)} | {above(g)} | {above(s)} | "
                         f"{f['steady']:.2f} | {g['steady']:.2f} | {s['steady']:.2f} | {s['first']:.1f} |")

    def activations(fw, rc):  # what forward+backward holds beyond the gradients, steady calls
        r = res[(fw, rc, "grad")]
        return r["steady_peak"] - r["built"] - r["trainable"]
    lines += ["", "Activations and temporaries of forward+backward (steady grad peak above build, less the gradients): "
              + "; ".join(f"{names[fw]} {activations(fw, 0):.2f} GiB without recompute, {activations(fw, 1):.2f} GiB "
                          "with it" for fw in ("ms", "torch")) + "."]
    append_section(f"Training step by phase, mid-size, {a.mode} mode", lines)


def recompute_table(a, common) -> None:
    names = {"ms": "MindSpore", "torch": "PyTorch"}
    res = {(fw, rc): run_worker("benchmarks.profile_train", [fw, "--phase", "grad", "--recompute", str(rc), *common],
                                timeout=7200) for fw in ("ms", "torch") for rc in (1, 0)}
    lines = [f"`python -m benchmarks.profile_train --recompute_only --frames {a.frames} --size {a.size} --steps {a.steps}` "
             f"— forward+backward ({a.mode} mode, mid-size, {a.frames} frames, {a.size * 8}×{a.size * 8}, batch 1, fp32) "
             "with and without recompute (PyTorch: diffusers' gradient checkpointing), each in its own process; memory "
             "is the highest RSS sampled during the steady calls above the built network's.", "",
             "| framework | recompute | forward+backward (s) | memory above the network (GiB) | of which gradients | "
             "saved by recompute (GiB) | time cost of recompute |", "|---|---|---|---|---|---|---|"]
    for fw in ("ms", "torch"):
        on, off = res[(fw, 1)], res[(fw, 0)]
        for rc, r in ((1, on), (0, off)):
            extra = (f"{(off['steady_peak'] - off['built']) - (on['steady_peak'] - on['built']):.2f} | "
                     f"{on['steady'] / off['steady']:.2f}×") if rc else " | "
            lines.append(f"| {names[fw]} | {'on' if rc else 'off'} | {r['steady']:.2f} | "
                         f"{r['steady_peak'] - r['built']:.2f} | {r['trainable']:.2f} | {extra} |")
    append_section(f"Recompute, mid-size, {a.frames} frames at {a.size * 8}²", lines)


if __name__ == "__main__":
    main()
