"""A small model trained through the real TrainStep / AdamW / ZeRO code, once per case, by one process or by
each ``msrun`` worker (``--distributed``); tests/test_zero.py compares what the ranks saved.

Sample ``i`` (global index, as ``data.dataset.sample_indices`` assigns them: rank r of w takes sample
``(step·accum + micro)·w + r`` at batch 1) is drawn from its own seed, so one process at batch w sees the
same samples as w workers at batch 1. Sample ``OVERFLOW_SAMPLE`` makes one parameter's gradient NaN while
its loss stays finite (d/da √|a·z| at z = 0): with two workers only rank 1 sees it.

    python tests/zero_worker.py OUT [--distributed] [--resume-from DIR RESUMED_OUT ...] [--skip-fresh]

writes every case trained from scratch into OUT (unless --skip-fresh), then, for each --resume-from, every
case resumed from DIR's state after RESUME_AT steps into RESUMED_OUT.
"""
import argparse
import json
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exvideo_ms.train.ema import EMA  # noqa: E402
from exvideo_ms.train.optim import AdamW  # noqa: E402
from exvideo_ms.train.parallel import init_parallel  # noqa: E402
from exvideo_ms.train.state import TrainingState  # noqa: E402
from exvideo_ms.train.step import LossScaleOptions, TrainStep  # noqa: E402
from exvideo_ms.train.zero import GradientSync  # noqa: E402

STEPS = 5
RESUME_AT = 2  # the cases that resume start from the state saved after this many steps
OVERFLOW_SAMPLE = 5  # step 2, rank 1 (batch 1, world 2, accum 1)
SHAPES = {"w": (5, 3), "b": (3,), "a": (1,), "v": (3, 7)}  # odd sizes: every slice is padded
# (stage, grad_accum, grad_clip)
CASES = {"stage0": (0, 1, 0.05), "stage1": (1, 1, 0.05), "stage2": (2, 1, 0.05), "stage2_accum": (2, 2, 0.0),
         "stage2_noclip": (2, 1, 0.0)}


class ToyLoss(nn.Cell):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        for name, shape in SHAPES.items():
            setattr(self, name, Parameter(Tensor(rng.standard_normal(shape).astype(np.float32) * 0.5), name=name))

    def construct(self, x, z, t):
        h = ops.tanh(ops.matmul(x, self.w) + self.b)
        err = ops.matmul(h, self.v) - t
        plain = (err * err).mean()
        weighted = plain + 0.1 * ops.sqrt(ops.abs(self.a * z)).mean()
        return weighted, plain


def sample(i: int):
    rng = np.random.default_rng(1000 + i)
    x = rng.standard_normal(5).astype(np.float32)
    z = np.float32(0.0 if i == OVERFLOW_SAMPLE else rng.uniform(0.5, 2.0))
    return x, np.array([z], np.float32), rng.standard_normal(7).astype(np.float32)


def batch(indices):
    xs, zs, ts = zip(*(sample(i) for i in indices))
    return Tensor(np.stack(xs)), Tensor(np.stack(zs)), Tensor(np.stack(ts))


def run(case: str, par, out: Path, resume_from: Path = None) -> None:
    stage, accum, clip = CASES[case]
    layout = par.layout.__class__(stage, par.rank, par.world)
    ms.set_seed(0)
    loss = ToyLoss()
    params = [getattr(loss, n) for n in SHAPES]
    names = list(SHAPES)
    optimizer = AdamW(params, (0.9, 0.99), 1e-8, 0.01, layout)
    scale = LossScaleOptions(init=1024.0, factor=2.0, window=2)
    step_cell = TrainStep(loss, optimizer, scale, clip, accum, GradientSync(layout))
    ema = EMA(params, 0.8)
    state = TrainingState(names, params, optimizer, step_cell, ema)
    start = 0
    if resume_from is not None:
        saved = np.load(resume_from / f"{case}_at{RESUME_AT}.npz")
        state.load_state_dict({g: {k.split("/", 1)[1]: saved[k] for k in saved.files if k.startswith(g + "/")}
                               for g in ("trainable", "optimizer", "ema")})
        start = RESUME_AT
    batch_size = 2 // par.world
    log = []
    for step in range(start, STEPS):
        lr = Tensor(0.01, ms.float32)
        for micro in range(accum):
            base = ((step * accum + micro) * par.world + par.rank) * batch_size
            weighted, plain, finite, used_scale = step_cell(lr, micro == accum - 1,
                                                            *batch(range(base, base + batch_size)))
        finite = bool(finite.asnumpy())
        if finite:
            ema()
        log.append({"loss": float(plain.asnumpy()), "finite": finite, "scale": float(used_scale.asnumpy()),
                    "next_scale": float(step_cell.loss_scale.asnumpy())})
        if step + 1 == RESUME_AT and resume_from is None or step + 1 == STEPS:
            saved = state.state_dict()  # a collective under sharding: every rank calls it
            if par.is_main:
                np.savez(out / f"{case}_at{step + 1}.npz",
                         **{f"{g}/{k}": v for g, d in saved.items() for k, v in d.items()})
    (out / f"{case}_rank{par.rank}.json").write_text(json.dumps(
        {"log": log, "state_bytes": optimizer.state_bytes(), "world": par.world}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--distributed", action="store_true")
    p.add_argument("--resume-from", type=Path, nargs=2, metavar=("DIR", "RESUMED_OUT"), action="append", default=[])
    p.add_argument("--skip-fresh", action="store_true")
    args = p.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    par = init_parallel(args.distributed, 0)
    if not args.skip_fresh:
        args.out.mkdir(parents=True, exist_ok=True)
        for case in CASES:
            run(case, par, args.out)
    for source, resumed in args.resume_from:
        resumed.mkdir(parents=True, exist_ok=True)
        for case in CASES:
            run(case, par, resumed, source)


if __name__ == "__main__":
    main()
