"""One ExVideo training step of a mid-size model: MindSpore (graph mode, our train step) vs PyTorch.

Model: SVD-XT at half width (160/320/640/640 channels), 8 frames, 128×128 (16×16 latents), batch 1, random
weights (at 16 frames, 256×256 MindSpore's worker was OOM-killed above 16.6 GB with the element-wise AdamW of
that time; at these defaults it peaks at 8.6 GiB, 16.8 GiB before the fused AdamW). MindSpore trains ExVideo's set (the temporal attention blocks with the position table and conv)
with the other weights frozen in fp32 (train.py's CPU default; ``--frozen fp16`` for the other), recompute on, AdamW, dynamic loss scale. PyTorch trains
the same blocks of diffusers' UNet (without ExVideo's table and conv, which diffusers does not have) in fp32
with autograd, gradient checkpointing and torch.optim.AdamW. Each framework runs in its own process; we
report the first step (MindSpore: graph compilation included), the steady step (mean of the rest), peak RSS.

    python -m benchmarks.bench_train [--steps 3] [--frames 8] [--size 16] [--frozen fp32|fp16]
"""
import argparse
import dataclasses
import gc

import numpy as np

from benchmarks.common import (THREADS, Timer, append_section, emit, limit_threads, peak_rss_gib,
                               record, run_worker)

MID_WIDTH, HEAD_CHANNELS = 160, 32


def batch(frames: int, size: int, seed: int = 0):
    g = np.random.default_rng(seed)
    return dict(latents=g.standard_normal((1, frames, 4, size, size)).astype(np.float32),
                cond=g.standard_normal((1, 4, size, size)).astype(np.float32),
                clip=g.standard_normal((1, 1, 1024)).astype(np.float32),
                ids=np.array([[29.0, 127.0, 0.0]], np.float32), sigma=np.array([15.6], np.float32),
                noise=g.standard_normal((1, frames, 4, size, size)).astype(np.float32))


def worker_mindspore(frames, size, steps, frozen="fp32"):
    import mindspore as ms
    from mindspore import Tensor

    from exvideo_ms.backend import choices, setup_device
    from exvideo_ms.config import load_config
    from exvideo_ms.models.unet import VideoUNet
    from exvideo_ms.train.loss import DenoisingLoss
    from exvideo_ms.train.optim import AdamW
    from exvideo_ms.train.step import LossScaleOptions, TrainStep
    from exvideo_ms.train.trainable import configure, set_recompute, trainable_names
    setup_device("CPU", mode=0)
    cfg = load_config("configs/exvideo_svd_128f.yaml")
    unet = VideoUNet(dataclasses.replace(cfg.unet, model_channels=MID_WIDTH, num_head_channels=HEAD_CHANNELS),
                     cfg.exvideo, choices=choices())
    names = trainable_names(unet, "exvideo", True)
    trainable = configure(unet, names, ms.float16 if frozen == "fp16" else ms.float32)
    set_recompute(unet)
    step = TrainStep(DenoisingLoss(unet, "exvideo", 1.01, 256), AdamW(trainable), LossScaleOptions())
    step.set_train(True)
    b = batch(frames, size)
    args = [Tensor(b[k]) for k in ("latents", "cond", "clip", "ids", "sigma", "noise")]
    times = []
    for _ in range(steps):
        with Timer() as t:
            out = step(Tensor(1e-5, ms.float32), True, *args)
            float(out[0].asnumpy())
        times.append(t.seconds)
        gc.collect()
    return dict(framework=f"MindSpore (graph, {frozen} frozen, recompute)", first=times[0],
                steady=float(np.mean(times[1:])), peak_rss=peak_rss_gib(),
                trainable=int(sum(p.size for p in trainable)))


def worker_torch(frames, size, steps):
    import torch
    from diffusers import UNetSpatioTemporalConditionModel
    torch.set_num_threads(THREADS)
    unet = UNetSpatioTemporalConditionModel(block_out_channels=(MID_WIDTH, 2 * MID_WIDTH, 4 * MID_WIDTH, 4 * MID_WIDTH),
                                            num_attention_heads=(5, 10, 20, 20))
    unet.requires_grad_(False)
    trainable = []
    for name, module in unet.named_modules():
        if name.endswith("temporal_transformer_blocks") or name.endswith("time_pos_embed"):
            module.requires_grad_(True)
    trainable = [p for p in unet.parameters() if p.requires_grad]
    unet.enable_gradient_checkpointing()
    unet.train()
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    b = {k: torch.from_numpy(v) for k, v in batch(frames, size).items()}
    times = []
    for _ in range(steps):
        with Timer() as t:
            s = b["sigma"].reshape(1, 1, 1, 1, 1)
            x = b["latents"] + s * b["noise"]
            inp = torch.cat([x / (s ** 2 + 1) ** 0.5, b["cond"][:, None].expand(-1, frames, -1, -1, -1)], 2)
            out = unet(inp, 0.25 * torch.log(b["sigma"]), b["clip"], b["ids"]).sample
            x0 = x / (s ** 2 + 1) - s / (s ** 2 + 1) ** 0.5 * out
            loss = ((x0 - 1.01 * b["latents"]) ** 2).mean() * (b["sigma"] ** 2 + 1) ** 0.5 / b["sigma"]
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
        times.append(t.seconds)
        gc.collect()
    return dict(framework="PyTorch (diffusers, fp32, checkpointing)", first=times[0], steady=float(np.mean(times[1:])),
                peak_rss=peak_rss_gib(), trainable=int(sum(p.numel() for p in trainable)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["ms", "torch"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=16, help="latent size (pixels / 8)")
    p.add_argument("--frozen", choices=["fp16", "fp32"], default="fp32",
                   help="dtype of MindSpore's frozen weights (fp32 is train.py's CPU default)")
    a = p.parse_args()
    if a.worker:
        limit_threads()
        emit(worker_mindspore(a.frames, a.size, a.steps, a.frozen) if a.worker == "ms"
             else worker_torch(a.frames, a.size, a.steps))
        return
    common = ["--steps", str(a.steps), "--frames", str(a.frames), "--size", str(a.size)]
    res = [run_worker("benchmarks.bench_train", ["ms", *common, "--frozen", a.frozen], timeout=7200),
           run_worker("benchmarks.bench_train", ["torch", *common], timeout=7200)]
    lines = [f"`python -m benchmarks.bench_train` — one ExVideo-mode training step, mid-size SVD-XT (half width), "
             f"{a.frames} frames, {a.size * 8}×{a.size * 8}, batch 1, random weights; steady = mean of steps 2..{a.steps}. "
             f"Trainable: MindSpore {res[0]['trainable']:,} (with ExVideo's table and conv), PyTorch "
             f"{res[1]['trainable']:,} (diffusers has no table/conv).", "",
             "| framework | first step (s) | steady step (s) | peak RSS (GiB) |", "|---|---|---|---|"]
    for r in res:
        lines.append(f"| {r['framework']} | {r['first']:.1f} | {r['steady']:.1f} | {r['peak_rss']:.2f} |")
    lines += ["", f"RSS ratio ms/torch: {res[0]['peak_rss'] / res[1]['peak_rss']:.2f}",
              f"ratio ms/torch: {res[0]['steady'] / res[1]['steady']:.2f}"]
    append_section("Training step, mid-size, ExVideo mode", lines)
    ms_r, th_r = res
    record("train", {"time_ratio": ms_r["steady"] / th_r["steady"], "rss_ratio": ms_r["peak_rss"] / th_r["peak_rss"],
                     "frames": a.frames, "size": a.size})


if __name__ == "__main__":
    main()
