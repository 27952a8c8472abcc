"""Long videos: cost per frame and peak memory of one UNet evaluation at 16, 32, 64 and 128 frames.

Model: a mid-size SVD-XT (half the widths: 160/320/640/640 channels, heads 5/10/20/20, ~380 M parameters),
random weights, fp32, 32×32 latents (a 256² video), one video, one evaluation (ExVideo runs the conditional
and unconditional passes one after the other). MindSpore runs the ExVideo-extended UNet (128-row position
table, positional conv) in graph mode; PyTorch runs diffusers' UNet of the same widths (no extension: the
closest reference that exists). Every frame count is its own process, so peak RSS is its own.

    python -m benchmarks.bench_long_video [--frames 16 32 64 128] [--size 32]
"""
import argparse
import dataclasses
import gc
import math

import numpy as np

from benchmarks.common import (DOC, THREADS, Timer, append_section, emit,
                               limit_threads, peak_rss_gib, record, run_worker)

MID_WIDTH = 160  # half of SVD's model_channels 320
HEAD_CHANNELS = 32  # keeps SVD's head counts (5, 10, 20, 20) at half width
C_NOISE = 0.25 * math.log(700.0)


def inputs(frames: int, size: int, seed: int = 0):
    g = np.random.default_rng(seed)
    return (g.standard_normal((1, frames, 8, size, size)).astype(np.float32),
            g.standard_normal((1, 1, 1024)).astype(np.float32), np.array([[29.0, 127.0, 0.0]], np.float32))


def worker_mindspore(frames: int, size: int) -> dict:
    from mindspore import Tensor

    from exvideo_ms.backend import choices, setup_device
    from exvideo_ms.config import load_config
    from exvideo_ms.models.conditioner import added_time_vector, repeat_frames
    from exvideo_ms.models.unet import VideoUNet
    setup_device("CPU", mode=0)
    cfg = load_config("configs/exvideo_svd_128f.yaml")
    unet_cfg = dataclasses.replace(cfg.unet, model_channels=MID_WIDTH, num_head_channels=HEAD_CHANNELS)
    net = VideoUNet(unet_cfg, cfg.exvideo, choices=choices())
    net.set_train(False)
    x, ctx, ids = inputs(frames, size)
    args = (Tensor(x[0]), Tensor(np.full((frames,), C_NOISE, np.float32)), repeat_frames(Tensor(ctx), frames),
            repeat_frames(added_time_vector(Tensor(ids), 256), frames), frames)
    rss_weights = peak_rss_gib()
    times = []
    for _ in range(2):
        with Timer() as t:
            net(*args).asnumpy()
        times.append(t.seconds)
        gc.collect()
    return dict(frames=frames, first=times[0], steady=times[1], peak_rss=peak_rss_gib(), rss_weights=rss_weights,
                params=int(sum(p.size for p in net.get_parameters())))


def worker_torch(frames: int, size: int) -> dict:
    import torch
    from diffusers import UNetSpatioTemporalConditionModel
    torch.set_num_threads(THREADS)
    net = UNetSpatioTemporalConditionModel(block_out_channels=(MID_WIDTH, 2 * MID_WIDTH, 4 * MID_WIDTH, 4 * MID_WIDTH),
                                           num_attention_heads=(5, 10, 20, 20)).eval()
    x, ctx, ids = inputs(frames, size)
    rss_weights = peak_rss_gib()
    times = []
    with torch.no_grad():
        for _ in range(2):
            with Timer() as t:
                net(torch.from_numpy(x), torch.tensor(C_NOISE), torch.from_numpy(ctx), torch.from_numpy(ids))
            times.append(t.seconds)
            gc.collect()
    return dict(frames=frames, first=times[0], steady=times[1], peak_rss=peak_rss_gib(), rss_weights=rss_weights,
                params=int(sum(p.numel() for p in net.parameters())))


def plot(ms_rows, th_rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for rows, label in ((ms_rows, "MindSpore (ExVideo UNet, graph)"), (th_rows, "PyTorch (diffusers UNet)")):
        f = [r["frames"] for r in rows]
        a.plot(f, [r["steady"] / r["frames"] for r in rows], "o-", label=label)
        b.plot(f, [r["peak_rss"] for r in rows], "o-", label=label)
    a.set(xlabel="frames", ylabel="seconds per frame (one UNet evaluation)", xscale="log", title="cost per frame")
    b.set(xlabel="frames", ylabel="peak RSS (GiB)", xscale="log", title="peak memory")
    from matplotlib.ticker import NullFormatter
    for ax in (a, b):
        ax.set_xticks([r["frames"] for r in ms_rows], [str(r["frames"]) for r in ms_rows])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["ms", "torch"])
    p.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--size", type=int, default=32)
    a = p.parse_args()
    if a.worker:
        limit_threads()
        emit((worker_mindspore if a.worker == "ms" else worker_torch)(a.frames[0], a.size))
        return
    rows = {w: [run_worker("benchmarks.bench_long_video", [w, "--frames", str(f), "--size", str(a.size)],
                           timeout=7200) for f in a.frames] for w in ("ms", "torch")}
    png = DOC.parent / "long_video.png"
    plot(rows["ms"], rows["torch"], png)
    lines = [f"`python -m benchmarks.bench_long_video` — mid-size SVD-XT ({rows['ms'][0]['params']:,} parameters with "
             f"ExVideo's extension; diffusers {rows['torch'][0]['params']:,} without), random weights, fp32, "
             f"{a.size}×{a.size} latents, one video, one UNet evaluation (steady = second call).", "",
             "| frames | MindSpore s/frame | MindSpore peak RSS (GiB) | PyTorch s/frame | PyTorch peak RSS (GiB) |",
             "|---|---|---|---|---|"]
    for m, t in zip(rows["ms"], rows["torch"]):
        lines.append(f"| {m['frames']} | {m['steady'] / m['frames']:.3f} | {m['peak_rss']:.2f} | "
                     f"{t['steady'] / t['frames']:.3f} | {t['peak_rss']:.2f} |")
    first, last = rows["ms"][0], rows["ms"][-1]
    growth = (last["peak_rss"] - last["rss_weights"]) / max(first["peak_rss"] - first["rss_weights"], 1e-9)
    lines += ["", f"![cost per frame and peak RSS]({png.name})", "",
              f"MindSpore cost/frame({last['frames']}) ÷ cost/frame({first['frames']}): "
              f"{(last['steady'] / last['frames']) / (first['steady'] / first['frames']):.2f} (target ≤ 1.15)",
              f"MindSpore activation memory (peak − weights) grows {growth:.1f}× for "
              f"{last['frames'] // first['frames']}× the frames",
              f"ratio ms/torch at {last['frames']} frames: {last['steady'] / rows['torch'][-1]['steady']:.2f}"]
    append_section("Long video: cost per frame", lines)
    record("long_video", {"per_frame_growth": (last["steady"] / last["frames"]) / (first["steady"] / first["frames"]),
                          "activation_growth": growth, "frames": [m["frames"] for m in rows["ms"]],
                          "time_ratio": last["steady"] / rows["torch"][-1]["steady"],
                          "rss_ratio": last["peak_rss"] / rows["torch"][-1]["peak_rss"]})


if __name__ == "__main__":
    main()
