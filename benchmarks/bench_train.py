"""One ExVideo training step of a mid-size model: MindSpore (graph mode, our train step) vs PyTorch.

Model: SVD-XT at half width (160/320/640/640 channels), 8 frames, 128×128 (16×16 latents), batch 1, random
weights (at 16 frames, 256×256 MindSpore's worker was OOM-killed above 16.6 GB with the element-wise AdamW of
that time; at these defaults it peaks at 8.6 GiB, 16.8 GiB before the fused AdamW). MindSpore trains ExVideo's set (the temporal attention blocks with the position table and conv)
with the other weights frozen in fp32 (train.py's CPU default; ``--frozen fp16`` for the other), recompute on, AdamW, dynamic loss scale. PyTorch trains
the same set on diffusers' UNet given ExVideo's table and conv (benchmarks/torch_exvideo.py, equal to ours:
tests/test_torch_exvideo.py) in fp32 with autograd, gradient checkpointing and torch.optim.AdamW. Each framework runs in its own process; we
report the first step (MindSpore: graph compilation included), the steady step (mean of the rest), peak RSS.

    python -m benchmarks.bench_train [--steps 3] [--frames 8] [--size 16] [--frozen fp32|fp16] [--modes exvideo,temporal_only,lora,full]
        [--recompute on|off]

``--recompute off`` runs both sides without it (MindSpore's recompute of every UNet block, PyTorch's gradient
checkpointing; train.py's ``--train.recompute false``).

``--modes`` compares train.py's modes, each in its own pair of processes: ``temporal_only`` (every temporal
layer), ``lora`` (rank 16 on the q/k/v/out projections of every attention, SVD_Xtend's recipe; PyTorch through
PEFT) and ``full`` (the whole UNet). Both sides have ExVideo's table and conv in every mode.

``--compile_cache`` instead times MindSpore's first step (each mode of --modes) in a fresh process twice over one new
compile-cache folder, as train.py's --environment.compile_cache keeps it: cold (compiling and writing the cache),
then warm (a resumed or repeated run), beside PyTorch's first step; then a process that only compiles the step
into a second new folder (MindSpore's ``MS_DEV_PRECOMPILE_ONLY``), and a run over it.

    python -m benchmarks.bench_train --compile_cache [--modes exvideo,full]

``--zero`` instead writes the per-rank memory of the ZeRO stages (train/zero.py) on a 96-channel model
(SVD-XT has 320, mid-size 160): one process, and two msrun CPU workers at each stage 0/1/2 (2 steps, 2 frames,
128×128: the optimizer's share does not depend on the clip size): the bytes each rank holds, counted from its
tensors, and its peak RSS.

    python -m benchmarks.bench_train --zero
"""
import argparse
import dataclasses
import gc
import os
import subprocess
import sys

import numpy as np

from benchmarks.common import (THREADS, Timer, append_section, emit, limit_threads, peak_rss_gib,
                               record, run_worker)

MID_WIDTH, HEAD_CHANNELS = 160, 32
MODES = ("exvideo", "temporal_only", "lora", "full")  # train.py's modes compared (--modes)
NUM_POSITIONS = 128  # configs/exvideo_svd_128f.yaml's position table, given to both sides
LORA_RANK = 16  # SVD_Xtend's LoRA recipe: rank 16 on to_q/to_k/to_v/to_out.0 of every attention, spatial and temporal
LORA_TARGETS = ("spatial_attention", "temporal_attention")
# each side's allocator as its users run it: train.py relaunches itself with jemalloc (exvideo_ms/allocator.py);
# PyTorch with glibc's, its default. benchmarks/bench_allocator.py runs both sides under both.
MS_ALLOCATOR, TORCH_ALLOCATOR = "jemalloc", "system"
ZERO_WIDTH = 96  # --zero: two workers at MID_WIDTH were OOM-killed (12 GiB each, measured) on a 24 GiB machine;
#                 96 is divisible by GroupNorm's 32 groups and 32-channel heads at every level


def batch(frames: int, size: int, seed: int = 0):
    g = np.random.default_rng(seed)
    return dict(latents=g.standard_normal((1, frames, 4, size, size)).astype(np.float32),
                cond=g.standard_normal((1, 4, size, size)).astype(np.float32),
                clip=g.standard_normal((1, 1, 1024)).astype(np.float32),
                ids=np.array([[29.0, 127.0, 0.0]], np.float32), sigma=np.array([15.6], np.float32),
                noise=g.standard_normal((1, frames, 4, size, size)).astype(np.float32))


def mindspore_setup(frames, size, frozen="fp32", mode="exvideo", recompute=True):
    """The mid-size UNet of ``mode`` (graph mode, CPU), its trainable parameters, the denoising loss and its
    inputs, as the MindSpore worker trains them."""
    import mindspore as ms
    from mindspore import Tensor

    from exvideo_ms import lora
    from exvideo_ms.backend import setup_device
    from exvideo_ms.config import load_config
    from exvideo_ms.models.svd import build_model
    from exvideo_ms.train.loss import DenoisingLoss
    from exvideo_ms.train.trainable import configure, set_recompute, trainable_names
    setup_device("CPU", mode=0)
    ms.set_seed(0)  # the same random weights in every process: runs over one compile cache compare losses
    cfg = load_config("configs/exvideo_svd_128f.yaml")
    cfg = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, model_channels=MID_WIDTH,
                                                            num_head_channels=HEAD_CHANNELS))
    unet = build_model(cfg, ["unet"]).unet  # parameters named unet.*, as lora.add_lora maps them
    if mode == "lora":
        lora.add_lora(unet, cfg, LORA_RANK, LORA_RANK, lora.kinds_pattern(LORA_TARGETS))
    names = trainable_names(unet, mode, True)
    trainable = configure(unet, names, ms.float16 if frozen == "fp16" else ms.float32)
    if recompute:
        set_recompute(unet)
    b = batch(frames, size)
    args = [Tensor(b[k]) for k in ("latents", "cond", "clip", "ids", "sigma", "noise")]
    return unet, trainable, DenoisingLoss(unet, "exvideo", 1.01, 256), args


def worker_mindspore(frames, size, steps, frozen="fp32", mode="exvideo", cache=None, recompute=True,
                     compile_only=False):
    """``compile_only``: MindSpore compiles the step into ``cache`` without running it
    (``MS_DEV_PRECOMPILE_ONLY``), once."""
    if compile_only:
        os.environ["MS_DEV_PRECOMPILE_ONLY"] = "1"  # read by MindSpore when it compiles
        steps = 1
    import mindspore as ms
    from mindspore import Tensor

    from exvideo_ms.backend import enable_compile_cache
    from exvideo_ms.train.optim import AdamW
    from exvideo_ms.train.step import LossScaleOptions, TrainStep
    unet, trainable, loss, args = mindspore_setup(frames, size, frozen, mode, recompute)
    reused = enable_compile_cache(cache) if cache else None
    step = TrainStep(loss, AdamW(trainable), LossScaleOptions())
    step.set_train(True)
    times, losses = [], []
    for _ in range(steps):
        with Timer() as t:
            out = step(Tensor(1e-5, ms.float32), True, *args)
            if not compile_only:  # the precompiling call returns nothing
                losses.append(float(out[0].asnumpy()))
        times.append(t.seconds)
        gc.collect()
    return dict(framework=f"MindSpore (graph, {frozen} frozen{', recompute' if recompute else ''})", mode=mode,
                first=times[0], loss=losses[0] if losses else None,
                steady=float(np.mean(times[1:])) if steps > 1 else float("nan"), peak_rss=peak_rss_gib(),
                trainable=int(sum(p.size for p in trainable)), cache_reused=reused)


def compile_cache_table(frames: int, size: int, steps: int, mode: str) -> None:
    import tempfile
    common = ["--steps", str(steps), "--frames", str(frames), "--size", str(size), "--modes", mode]
    def ms_run(cache, *extra):
        return run_worker("benchmarks.bench_train", ["ms", *common, "--cache", cache, *extra], timeout=7200,
                          allocator=MS_ALLOCATOR)
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as cache2:
        runs = [ms_run(cache) for _ in range(2)]
        pre = [ms_run(cache2, "--compile_only"), ms_run(cache2)]
    if [r["cache_reused"] for r in runs + pre] != [False, True, False, True]:
        raise RuntimeError(f"a second process did not find the first one's cache: {runs + pre}")
    if not runs[0]["loss"] == runs[1]["loss"] == pre[1]["loss"]:  # the same seeded weights and batch everywhere
        raise RuntimeError(f"a cached graph computed another first loss: {runs + pre}")
    torch = run_worker("benchmarks.bench_train", ["torch", *common], timeout=7200, allocator=TORCH_ALLOCATOR)
    lines = [f"`python -m benchmarks.bench_train --compile_cache --modes {mode}` — bench_train's mid-size step "
             f"({mode} mode, {frames} frames, {size * 8}×{size * 8}, batch 1, fp32, recompute), each run in a fresh "
             "process; MindSpore twice over "
             "one new compile-cache folder (as train.py's `--environment.compile_cache` keeps one per configuration): "
             "cold compiles and writes it, warm is a resumed or repeated run; then over a second folder, first a process "
             "that only compiles (`MS_DEV_PRECOMPILE_ONLY=1`), then a run. Every MindSpore run that trains computes the "
             "same first loss. Steady = mean of steps 2..",
             "", "| run | first step (s) | steady step (s) | peak RSS (GiB) | first step ÷ PyTorch's |", "|---|---|---|---|---|"]
    for name, r in (("MindSpore, cold cache", runs[0]), ("MindSpore, warm cache", runs[1]),
                    ("MindSpore, compiling only (no step runs)", pre[0]),
                    ("MindSpore, over the cache it wrote", pre[1]), ("PyTorch", torch)):
        steady = "—" if r["steady"] != r["steady"] else f"{r['steady']:.2f}"
        lines.append(f"| {name} | {r['first']:.1f} | {steady} | {r['peak_rss']:.2f} | "
                     f"{r['first'] / torch['first']:.1f} |")
    lines += ["", f"warm ÷ cold first step: {runs[1]['first'] / runs[0]['first']:.2f}; compiling first in its own "
                  f"process: {(pre[0]['first'] + pre[1]['first']) / runs[0]['first']:.2f} of the cold first step "
                  f"in two processes, each peaking at most {max(pre[0]['peak_rss'], pre[1]['peak_rss']):.2f} GiB "
                  f"({max(pre[0]['peak_rss'], pre[1]['peak_rss']) / torch['peak_rss']:.2f}× PyTorch's)"]
    append_section(f"Training step's first call with a compile cache, mid-size, {mode} mode", lines)
    record("train_compile_cache" + ("" if mode == "exvideo" else f"_{mode}"),
           {"cold_first_s": runs[0]["first"], "warm_first_s": runs[1]["first"],
            "precompiled_first_s": pre[0]["first"] + pre[1]["first"],
            "cold_rss_ratio": runs[0]["peak_rss"] / torch["peak_rss"],
            "warm_rss_ratio": runs[1]["peak_rss"] / torch["peak_rss"],
            "precompiled_rss_ratio": max(pre[0]["peak_rss"], pre[1]["peak_rss"]) / torch["peak_rss"]})


def worker_zero(frames, size, steps, stage, distributed, out, width=MID_WIDTH):
    """One rank of the ZeRO memory table: counted bytes of what it holds, and its peak RSS."""
    import json
    from pathlib import Path

    import mindspore as ms
    from mindspore import Tensor

    from exvideo_ms.backend import choices, setup_device
    from exvideo_ms.config import load_config
    from exvideo_ms.models.unet import VideoUNet
    from exvideo_ms.train.loss import DenoisingLoss
    from exvideo_ms.train.optim import AdamW
    from exvideo_ms.train.parallel import init_parallel
    from exvideo_ms.train.step import LossScaleOptions, TrainStep
    from exvideo_ms.train.trainable import configure, set_recompute, trainable_names
    from exvideo_ms.train.zero import GradientSync
    setup_device("CPU", mode=0)
    par = init_parallel(distributed, stage)
    cfg = load_config("configs/exvideo_svd_128f.yaml")
    unet = VideoUNet(dataclasses.replace(cfg.unet, model_channels=width, num_head_channels=HEAD_CHANNELS),
                     cfg.exvideo, choices=choices())
    trainable = configure(unet, trainable_names(unet, "exvideo", True), None)
    set_recompute(unet)
    optimizer = AdamW(trainable, layout=par.layout)
    step = TrainStep(DenoisingLoss(unet, "exvideo", 1.01, 256), optimizer, LossScaleOptions(),
                     sync=GradientSync(par.layout))
    step.set_train(True)
    b = batch(frames, size, seed=par.rank)
    args = [Tensor(b[k]) for k in ("latents", "cond", "clip", "ids", "sigma", "noise")]
    for _ in range(steps):
        float(step(Tensor(1e-5, ms.float32), True, *args)[0].asnumpy())
    n = [int(p.size) for p in trainable]
    held_grad = sum(par.layout.slice_size((k,)) if par.layout.scatters_gradients else k for k in n) * 4
    result = dict(world=par.world, stage=stage, rank=par.rank, trainable_bytes=sum(n) * 4,
                  frozen_bytes=sum(int(p.nbytes) for p in unet.get_parameters() if not p.requires_grad),
                  reduced_grad_bytes=held_grad, optimizer_bytes=optimizer.state_bytes(), peak_rss=peak_rss_gib())
    Path(out, f"rank{par.rank}.json").write_text(json.dumps(result))
    return result


def zero_table(frames: int, size: int, steps: int, width: int) -> None:
    import json
    import tempfile
    from pathlib import Path

    from benchmarks.common import REPO
    rows = []
    for world, stage in ((1, 0), (2, 0), (2, 1), (2, 2)):
        with tempfile.TemporaryDirectory() as out:
            # not "--worker zero": msrun reads the script's options too and takes --worker for --worker_num
            args = ["--zero_worker", "--width", str(width), "--frames", str(frames), "--size", str(size), "--steps", str(steps),
                    "--stage", str(stage), "--out", out]
            env = dict(os.environ, OMP_NUM_THREADS="1" if world > 1 else str(THREADS), GLOG_v="3",
                       PYTHONPATH=str(REPO), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
            if world == 1:
                cmd = [sys.executable, "-m", "benchmarks.bench_train", *args]
            else:
                cmd = [str(Path(sys.executable).with_name("msrun")), "--worker_num=2", "--local_worker_num=2",
                       "--master_port=8811", f"--log_dir={out}/logs", "--join=True", "benchmarks/bench_train.py",
                       *args, "--distributed"]
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=7200)
            if proc.returncode != 0:
                logs = "".join(p.read_text()[-3000:] for p in Path(out).glob("logs/*.log"))
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}\n{logs}")
            rows += [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]
    gib = 2 ** 30
    lines = [f"`python -m benchmarks.bench_train --zero` — per-rank memory of ExVideo-mode training, SVD-XT at "
             f"{width}/{320} of its width ({rows[0]['trainable_bytes'] // 4:,} trainable parameters), {frames} frames, "
             f"{size * 8}×{size * 8}, batch 1 per rank, fp32, recompute; msrun CPU workers with 1 thread each (one "
             "process: 2 threads). Bytes are counted from the tensors each rank holds; RSS is measured.", "",
             "| ranks | ZeRO stage | rank | trainable weights (GiB) | mean gradient held (GiB) | AdamW moments (GiB) "
             "| frozen weights (GiB) | peak RSS (GiB) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['world']} | {r['stage']} | {r['rank']} | {r['trainable_bytes'] / gib:.3f} | "
                     f"{r['reduced_grad_bytes'] / gib:.3f} | {r['optimizer_bytes'] / gib:.3f} | "
                     f"{r['frozen_bytes'] / gib:.3f} | {r['peak_rss']:.2f} |")
    append_section("ZeRO stages: per-rank memory, mid-size, ExVideo mode", lines)


def _key_list_elements(path, prefix=""):
    """Element counts per tensor name of a published key/shape list (tests/data/keys)."""
    import math
    out = {}
    for line in open(path):
        if line.startswith("#") or "\t" not in line:
            continue
        name, shape = line.rstrip("\n").split("\t")
        if name.startswith(prefix):
            out[name] = math.prod(int(d) for d in shape.strip("()").split(",") if d.strip())
    return out


def zero_projection(ranks=(1, 8, 16)) -> None:
    """Per-NPU bytes of full-size ExVideo training (SVD-XT + ExVideo's 128-frame patch, exvideo mode, frozen
    weights in bf16), counted from the published key lists; activations are not included."""
    from benchmarks.common import REPO
    keys = REPO / "tests" / "data" / "keys"
    patch = _key_list_elements(keys / "exvideo_svd_128f_keys.txt")
    added = sum(n for k, n in patch.items() if "positional_embedding.embeddings" in k or "positional_conv" in k)
    unet = sum(_key_list_elements(keys / "sgm_svd_xt_keys.txt", "model.diffusion_model.").values())
    trainable = sum(patch.values())
    frozen = unet - (trainable - added)
    gb = 1e9
    lines = [f"`python -m benchmarks.bench_train --zero` — counted, not measured: full-size ExVideo post-tuning "
             f"(SVD-XT UNet {unet:,} elements + ExVideo's table and conv; {trainable:,} trainable in fp32 from the "
             f"ExVideo-SVD-128f-v1 key list, {frozen:,} frozen in bf16), per NPU, before activations "
             "(128×512², batch 1, recompute: not measurable here). \"gradient\" is what a rank keeps after the "
             "reduction and in gradient accumulation; within a step the backward pass still produces each local "
             f"gradient whole (up to {trainable * 4 / gb:.2f} GB more while it is being reduced).", "",
             "| NPUs | ZeRO stage | frozen weights | trainable weights | gradient | AdamW moments | total (GB) |",
             "|---|---|---|---|---|---|---|"]
    for n in ranks:
        for stage in ((0,) if n == 1 else (0, 1, 2)):
            w, f = trainable * 4, frozen * 2
            g = trainable * 4 / (n if stage == 2 else 1)
            m = trainable * 8 / (n if stage >= 1 else 1)
            lines.append(f"| {n} | {stage} | {f / gb:.2f} | {w / gb:.2f} | {g / gb:.2f} | {m / gb:.2f} | "
                         f"{(w + f + g + m) / gb:.2f} |")
    append_section("ZeRO stages: projected per-NPU memory, full-size ExVideo", lines)


def torch_setup(frames, size, mode="exvideo", checkpointing=True):
    """The same network in PyTorch (diffusers' UNet with ExVideo's additions), its trainable parameters and a
    function computing the loss, as the PyTorch worker trains them."""
    import torch
    from diffusers import UNetSpatioTemporalConditionModel

    from benchmarks.torch_exvideo import add_exvideo, trainable_set
    torch.set_num_threads(THREADS)
    unet = UNetSpatioTemporalConditionModel(block_out_channels=(MID_WIDTH, 2 * MID_WIDTH, 4 * MID_WIDTH, 4 * MID_WIDTH),
                                            num_attention_heads=(5, 10, 20, 20))
    add_exvideo(unet, NUM_POSITIONS)  # the same network as ours: ExVideo's table and conv (tests/test_torch_exvideo.py)
    unet.requires_grad_(False)
    if mode == "lora":  # PEFT on the same layers (PEFT full-matches a string target against module paths)
        from exvideo_ms import lora
        from peft import LoraConfig, inject_adapter_in_model
        unet = inject_adapter_in_model(LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, init_lora_weights=True,
                                                  target_modules=".*(" + lora.kinds_pattern(LORA_TARGETS) + ")"), unet)
    else:
        for prm in trainable_set(unet, mode):
            prm.requires_grad_(True)
    trainable = [p for p in unet.parameters() if p.requires_grad]
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    b = {k: torch.from_numpy(v) for k, v in batch(frames, size).items()}

    def loss():
        s = b["sigma"].reshape(1, 1, 1, 1, 1)
        x = b["latents"] + s * b["noise"]
        inp = torch.cat([x / (s ** 2 + 1) ** 0.5, b["cond"][:, None].expand(-1, frames, -1, -1, -1)], 2)
        out = unet(inp, 0.25 * torch.log(b["sigma"]), b["clip"], b["ids"]).sample
        x0 = x / (s ** 2 + 1) - s / (s ** 2 + 1) ** 0.5 * out
        return (((x0 - 1.01 * b["latents"]) ** 2).mean() * (b["sigma"] ** 2 + 1) ** 0.5 / b["sigma"]).sum()
    return unet, trainable, loss


def worker_torch(frames, size, steps, mode="exvideo", checkpointing=True):
    import torch
    unet, trainable, loss = torch_setup(frames, size, mode, checkpointing)
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    times = []
    for _ in range(steps):
        with Timer() as t:
            value = loss()
            opt.zero_grad()
            value.backward()
            opt.step()
        times.append(t.seconds)
        gc.collect()
    return dict(framework="PyTorch (diffusers, fp32" + (", checkpointing)" if checkpointing else ")")
                + (" + PEFT" if mode == "lora" else ""), mode=mode,
                first=times[0], steady=float(np.mean(times[1:])),
                peak_rss=peak_rss_gib(), trainable=int(sum(p.numel() for p in trainable)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["ms", "torch"])
    p.add_argument("--zero_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--width", type=int, default=ZERO_WIDTH,
                   help="--zero: model channels (default 96: two mid-size (160) workers were OOM-killed at 12 GiB each "
                        "on our 24 GiB machine)")
    p.add_argument("--zero", action="store_true", help="the ZeRO per-rank memory table instead")
    p.add_argument("--stage", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help="steps (default 3; --zero: 2)")
    p.add_argument("--frames", type=int, help="frames (default 8; --zero: 2, so that two workers fit in 24 GiB)")
    p.add_argument("--size", type=int, help="latent size, pixels / 8 (default 16)")
    p.add_argument("--modes", default="exvideo", help=f"comma-separated training modes among {MODES}")
    p.add_argument("--frozen", choices=["fp16", "fp32"], default="fp32",
                   help="dtype of MindSpore's frozen weights (fp32 is train.py's CPU default)")
    p.add_argument("--recompute", choices=["on", "off"], default="on",
                   help="MindSpore's recompute of every UNet block and PyTorch's gradient checkpointing, both on or off")
    p.add_argument("--compile_cache", action="store_true", help="the first step, cold and warm compile cache, instead")
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--compile_only", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.zero_worker:
        limit_threads()
        emit(worker_zero(a.frames, a.size, a.steps, a.stage, a.distributed, a.out, a.width))
        return
    if a.zero:
        zero_projection()
        zero_table(a.frames or 2, a.size or 16, a.steps or 2, a.width)
        return
    a.frames, a.size, a.steps = a.frames or 8, a.size or 16, a.steps or 3
    modes = a.modes.split(",")
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        p.error(f"--modes: {bad or modes} not among {list(MODES)}")
    if a.worker:
        limit_threads()
        on = a.recompute == "on"
        emit(worker_mindspore(a.frames, a.size, a.steps, a.frozen, modes[0], a.cache, on, a.compile_only)
             if a.worker == "ms"
             else worker_torch(a.frames, a.size, a.steps, modes[0], on))
        return
    if a.compile_cache:
        for mode in modes:
            compile_cache_table(a.frames, a.size, a.steps, mode)
        return
    common = ["--steps", str(a.steps), "--frames", str(a.frames), "--size", str(a.size), "--recompute", a.recompute]
    res = {m: [run_worker("benchmarks.bench_train", ["ms", *common, "--frozen", a.frozen, "--modes", m], timeout=7200,
                          allocator=MS_ALLOCATOR),
               run_worker("benchmarks.bench_train", ["torch", *common, "--modes", m], timeout=7200,
                          allocator=TORCH_ALLOCATOR)] for m in modes}
    lines = [f"`python -m benchmarks.bench_train --modes {a.modes} --recompute {a.recompute}` — one training step, mid-size SVD-XT (half width), "
             f"{a.frames} frames, {a.size * 8}×{a.size * 8}, batch 1, random weights; steady = mean of steps 2..{a.steps}. "
             "Both sides are the same network, ExVideo's 128-row table and conv included (PyTorch: diffusers' UNet "
             "patched by benchmarks/torch_exvideo.py), and train the same set: exvideo: the temporal transformers with "
             "the table and conv; temporal_only: every temporal layer; lora: rank-16 branches on to_q/to_k/to_v/to_out.0 "
             "of every attention (ours; PEFT on the PyTorch side); full: the whole UNet. Host allocator: each side's "
             "as its users run it (train.py: jemalloc; PyTorch: glibc).",
             "", "| mode | framework | allocator | trainable | first step (s) | steady step (s) | peak RSS (GiB) | "
             "ms/torch time | ms/torch RSS |", "|---|---|---|---|---|---|---|---|---|"]
    for m, (ms_r, th_r) in res.items():
        for r in (ms_r, th_r):
            ratio = (f"{ms_r['steady'] / th_r['steady']:.2f} | {ms_r['peak_rss'] / th_r['peak_rss']:.2f}" if r is ms_r
                     else " | ")
            lines.append(f"| {m} | {r['framework']} | {r['allocator']} | {r['trainable']:,} | {r['first']:.1f} | {r['steady']:.1f} | "
                         f"{r['peak_rss']:.2f} | {ratio} |")
    append_section("Training step, mid-size, by training mode", lines)
    for m, (ms_r, th_r) in res.items():
        record(("train" if m == "exvideo" else f"train_{m}") + ("" if a.recompute == "on" else "_no_recompute"),
               {"time_ratio": ms_r["steady"] / th_r["steady"], "rss_ratio": ms_r["peak_rss"] / th_r["peak_rss"],
                "ms_first_s": ms_r["first"], "torch_first_s": th_r["first"], "ms_steady_s": ms_r["steady"],
                "torch_steady_s": th_r["steady"], "frames": a.frames, "size": a.size, "trainable": ms_r["trainable"]})

if __name__ == "__main__":
    main()
