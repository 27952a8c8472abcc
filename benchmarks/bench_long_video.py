"""Long videos: cost per frame and peak memory of one UNet evaluation at 16, 32, 64 and 128 frames, and past
the position table (``--window``) of one evaluation of the temporal-window denoiser at 128, 256 and 512 frames.

Model: a mid-size SVD-XT (half the widths: 160/320/640/640 channels, heads 5/10/20/20, ~380 M parameters),
random weights, fp32, 32×32 latents (a 256² video), one video, one evaluation (ExVideo runs the conditional
and unconditional passes one after the other). MindSpore runs the ExVideo-extended UNet (128-row position
table, positional conv) in graph mode; PyTorch runs diffusers' UNet of the same widths (no extension: the
closest reference that exists). Every frame count is its own process, so peak RSS is its own.

With ``--window W --stride S`` every frame count is denoised in windows of W frames every S frames (the
pipeline's ``temporal_window``/``temporal_stride``, diffusion/temporal_windows.py), on both sides with the same
spans and blend weights; the first call (timed apart) is one window, which compiles the only graph.

    python -m benchmarks.bench_long_video [--frames 16 32 64 128] [--size 32]
    python -m benchmarks.bench_long_video --window 128 --stride 64 --frames 128 256 512 --size 16
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


def window_plan(frames: int, window: int, stride: int):
    """Spans and blend weights of the temporal-window denoiser (one span when ``window`` is 0)."""
    from exvideo_ms.diffusion.temporal_windows import blend_weights, temporal_spans
    spans = temporal_spans(frames, window, stride) if window else [(0, frames)]
    return spans, [w.reshape(1, -1, 1, 1, 1) for w in blend_weights(spans, frames)]


def worker_mindspore(frames: int, size: int, window: int = 0, stride: int = 0) -> dict:
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
    spans, weights = window_plan(frames, window, stride)
    n = spans[0][1] - spans[0][0]
    args = (Tensor(np.full((n,), C_NOISE, np.float32)), repeat_frames(Tensor(ctx), n),
            repeat_frames(added_time_vector(Tensor(ids), 256), n), n)

    def evaluate(which):
        out = np.zeros(x.shape[:2] + (4,) + x.shape[3:], np.float32)  # ε/x0 estimate: the 4 latent channels
        for (s, e), w in which:
            out[:, s:e] += w * net(Tensor(x[0, s:e]), *args).asnumpy()[None]
        return out
    rss_weights = peak_rss_gib()
    times = []
    for which in ([(spans[0], weights[0])], list(zip(spans, weights))):  # compile on one window, then the video
        with Timer() as t:
            evaluate(which)
        times.append(t.seconds)
        gc.collect()
    return dict(frames=frames, first=times[0], steady=times[1], peak_rss=peak_rss_gib(), rss_weights=rss_weights,
                params=int(sum(p.size for p in net.get_parameters())), windows=len(spans), evaluated=len(spans) * n)


def worker_torch(frames: int, size: int, window: int = 0, stride: int = 0) -> dict:
    import torch
    from diffusers import UNetSpatioTemporalConditionModel
    torch.set_num_threads(THREADS)
    net = UNetSpatioTemporalConditionModel(block_out_channels=(MID_WIDTH, 2 * MID_WIDTH, 4 * MID_WIDTH, 4 * MID_WIDTH),
                                           num_attention_heads=(5, 10, 20, 20)).eval()
    x, ctx, ids = inputs(frames, size)
    spans, weights = window_plan(frames, window, stride)

    def evaluate(which):
        out = np.zeros(x.shape[:2] + (4,) + x.shape[3:], np.float32)
        for (s, e), w in which:
            out[:, s:e] += w * net(torch.from_numpy(x[:, s:e]), torch.tensor(C_NOISE), torch.from_numpy(ctx),
                                   torch.from_numpy(ids)).sample.numpy()
        return out
    rss_weights = peak_rss_gib()
    times = []
    with torch.no_grad():
        for which in ([(spans[0], weights[0])], list(zip(spans, weights))):
            with Timer() as t:
                evaluate(which)
            times.append(t.seconds)
            gc.collect()
    return dict(frames=frames, first=times[0], steady=times[1], peak_rss=peak_rss_gib(), rss_weights=rss_weights,
                params=int(sum(p.numel() for p in net.parameters())), windows=len(spans),
                evaluated=len(spans) * (spans[0][1] - spans[0][0]))


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


def windows_section(rows, a) -> None:
    """The temporal-window table: cost per output frame and per UNet frame evaluated, peak RSS."""
    ms, th = rows["ms"], rows["torch"]
    lines = [f"`python -m benchmarks.bench_long_video --window {a.window} --stride {a.stride}` — mid-size SVD-XT "
             f"({ms[0]['params']:,} parameters with ExVideo's extension; diffusers {th[0]['params']:,} without), "
             f"random weights, fp32, {a.size}×{a.size} latents, one video, one evaluation of the temporal-window "
             f"denoiser (windows of {a.window} frames every {a.stride}, blended; the same spans and weights on both "
             f"sides), after a first call on one window (compilation).", "",
             "| frames | windows | UNet frames evaluated | MindSpore s/frame | MindSpore s/evaluated frame | "
             "MindSpore peak RSS (GiB) | PyTorch s/frame | PyTorch s/evaluated frame | PyTorch peak RSS (GiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m, t in zip(ms, th):
        lines.append(f"| {m['frames']} | {m['windows']} | {m['evaluated']} | {m['steady'] / m['frames']:.3f} | "
                     f"{m['steady'] / m['evaluated']:.3f} | {m['peak_rss']:.2f} | {t['steady'] / t['frames']:.3f} | "
                     f"{t['steady'] / t['evaluated']:.3f} | {t['peak_rss']:.2f} |")
    first, last = ms[0], ms[-1]
    per_eval = (last["steady"] / last["evaluated"]) / (first["steady"] / first["evaluated"])
    per_frame = (last["steady"] / last["frames"]) / (first["steady"] / first["frames"])
    rss = last["peak_rss"] / first["peak_rss"]
    lines += ["", f"MindSpore, {last['frames']} against {first['frames']} frames: seconds per evaluated frame "
                  f"{per_eval:.2f}×, peak RSS {rss:.2f}× (target ≤ 1.15 each); seconds per output frame "
                  f"{per_frame:.2f}×, which is the overlap's price: {last['evaluated']} UNet frames for "
                  f"{last['frames']} ({last['evaluated'] / last['frames']:.2f} per frame; a stride equal to the window "
                  f"costs 1.00)",
              f"ratio ms/torch at {last['frames']} frames: time {last['steady'] / th[-1]['steady']:.2f}, "
              f"peak RSS {last['peak_rss'] / th[-1]['peak_rss']:.2f}"]
    append_section("Long video past the position table: temporal windows", lines)
    record("long_video_windows", {"frames": [m["frames"] for m in ms], "window": a.window, "stride": a.stride,
                                  "per_evaluated_frame_growth": per_eval, "per_frame_growth": per_frame,
                                  "rss_growth": rss, "time_ratio": last["steady"] / th[-1]["steady"],
                                  "rss_ratio": last["peak_rss"] / th[-1]["peak_rss"]})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["ms", "torch"])
    p.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--window", type=int, default=0, help="temporal window (0: the whole video in one evaluation)")
    p.add_argument("--stride", type=int, default=0, help="frames between window starts (default: half the window)")
    a = p.parse_args()
    if a.window and not a.stride:
        a.stride = a.window // 2
    if a.window and not 1 <= a.stride <= a.window:
        p.error(f"--stride must be in 1..--window ({a.window}), got {a.stride}")
    if a.worker:
        limit_threads()
        emit((worker_mindspore if a.worker == "ms" else worker_torch)(a.frames[0], a.size, a.window, a.stride))
        return
    window = ["--window", str(a.window), "--stride", str(a.stride)] if a.window else []
    rows = {w: [run_worker("benchmarks.bench_long_video", [w, "--frames", str(f), "--size", str(a.size), *window],
                           timeout=7200) for f in a.frames] for w in ("ms", "torch")}
    if a.window:
        windows_section(rows, a)
        return
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
