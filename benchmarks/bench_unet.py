"""Full-size SVD-XT UNet forward, random weights, fp32: MindSpore (graph mode) vs PyTorch (diffusers).

Shape: 14 frames, 32×32 latents (a 256² video), batch 2 (the CFG pair): x (2·14, 8, 32, 32).
Each framework runs in its own process with 2 threads; we report build time, the first forward (graph
compilation included for MindSpore), the steady forward (the second), and peak RSS.

    python -m benchmarks.bench_unet [--frames 14] [--size 32] [--mode 0|1]
"""
import argparse
import gc
import math

import numpy as np

from benchmarks.common import (THREADS, Timer, append_section, emit, limit_threads, peak_rss_gib,
                               record, run_worker)

C_NOISE = 0.25 * math.log(700.0)  # the first sampling step's timestep
ADDED_TIME_IDS = (6.0, 127.0, 0.02)  # fps_id, motion bucket, cond_aug (diffusers pipeline defaults)


def inputs(frames: int, size: int, batch: int = 2, seed: int = 0):
    g = np.random.default_rng(seed)
    x = g.standard_normal((batch, frames, 8, size, size)).astype(np.float32)
    ctx = g.standard_normal((batch, 1, 1024)).astype(np.float32)
    ids = np.tile(np.asarray(ADDED_TIME_IDS, np.float32), (batch, 1))
    return x, ctx, ids


def worker_mindspore(frames: int, size: int, mode: int) -> dict:
    from mindspore import Tensor

    from exvideo_ms.backend import choices, setup_device
    from exvideo_ms.config import load_config
    from exvideo_ms.models.conditioner import added_time_vector, repeat_frames
    from exvideo_ms.models.unet import VideoUNet
    setup_device("CPU", mode=mode)
    cfg = load_config("configs/svd_xt.yaml")
    with Timer() as build:
        net = VideoUNet(cfg.unet, choices=choices())
        net.set_train(False)
    x, ctx, ids = inputs(frames, size)
    b = x.shape[0]
    args = (Tensor(x.reshape(b * frames, 8, size, size)), Tensor(np.full((b * frames,), C_NOISE, np.float32)),
            repeat_frames(Tensor(ctx), frames), repeat_frames(added_time_vector(Tensor(ids), 256), frames), frames)
    times = []
    for _ in range(2):
        with Timer() as t:
            out = net(*args).asnumpy()
        times.append(t.seconds)
        gc.collect()
    return dict(framework="MindSpore", build=build.seconds, first=times[0], steady=times[1],
                peak_rss=peak_rss_gib(), mean_abs=float(np.abs(out).mean()),
                params=int(sum(p.size for p in net.get_parameters())))


def worker_torch(frames: int, size: int) -> dict:
    import torch
    from diffusers import UNetSpatioTemporalConditionModel
    torch.set_num_threads(THREADS)
    with Timer() as build:
        net = UNetSpatioTemporalConditionModel().eval()
    x, ctx, ids = inputs(frames, size)
    times = []
    with torch.no_grad():
        for _ in range(2):
            with Timer() as t:
                out = net(torch.from_numpy(x), torch.tensor(C_NOISE), torch.from_numpy(ctx),
                          torch.from_numpy(ids)).sample.numpy()
            times.append(t.seconds)
            gc.collect()
    return dict(framework="PyTorch (diffusers)", build=build.seconds, first=times[0], steady=times[1],
                peak_rss=peak_rss_gib(), mean_abs=float(np.abs(out).mean()),
                params=int(sum(p.numel() for p in net.parameters())))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["ms", "torch"])
    p.add_argument("--frames", type=int, default=14)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--mode", type=int, default=0, help="MindSpore: 0 graph, 1 PyNative")
    a = p.parse_args()
    if a.worker:
        limit_threads()
        emit(worker_mindspore(a.frames, a.size, a.mode) if a.worker == "ms" else worker_torch(a.frames, a.size))
        return
    common = ["--frames", str(a.frames), "--size", str(a.size)]
    ms_res = run_worker("benchmarks.bench_unet", ["ms", *common, "--mode", str(a.mode)])
    th_res = run_worker("benchmarks.bench_unet", ["torch", *common])
    assert ms_res["params"] == th_res["params"], (ms_res["params"], th_res["params"])
    ratio = ms_res["steady"] / th_res["steady"]
    mode = "graph" if a.mode == 0 else "PyNative"
    lines = [f"`python -m benchmarks.bench_unet` — full SVD-XT UNet ({ms_res['params']:,} parameters), random "
             f"weights, fp32, {a.frames} frames, {a.size}×{a.size} latents, batch 2; MindSpore {mode} mode.",
             "", "| framework | build (s) | first forward (s) | steady forward (s) | peak RSS (GiB) |",
             "|---|---|---|---|---|"]
    for r in (ms_res, th_res):
        lines.append(f"| {r['framework']} | {r['build']:.1f} | {r['first']:.1f} | {r['steady']:.1f} | {r['peak_rss']:.2f} |")
    lines += ["", f"RSS ratio ms/torch: {ms_res['peak_rss'] / th_res['peak_rss']:.2f}",
              f"ratio ms/torch: {ratio:.2f}"]
    append_section("UNet forward, full size", lines)
    record("unet", {"time_ratio": ratio, "rss_ratio": ms_res["peak_rss"] / th_res["peak_rss"],
                    "ms_steady_s": ms_res["steady"], "torch_steady_s": th_res["steady"], "mode": mode})


if __name__ == "__main__":
    main()
