"""Where the UNet's time goes: the same forward as bench_unet, split by block kind, MindSpore and PyTorch side
by side, plus the UNet's FLOP count (torch's FlopCounterMode on the diffusers model) and the achieved FLOP rate
against this CPU's measured fp32 matmul peak.

MindSpore runs each piece as its own compiled graph (graph mode), in the order of the real forward, waiting
for each piece's output (one host copy); PyTorch times the matching diffusers modules with forward hooks. Pieces:

| row | MindSpore (sgm names) | diffusers |
|---|---|---|
| spatial res | ``ResBlock`` part of each ``VideoResBlock`` | ``ResnetBlock2D`` in ``SpatioTemporalResBlock`` |
| temporal res + mix | ``time_stack`` + ``time_mixer`` of each ``VideoResBlock`` | rest of ``SpatioTemporalResBlock`` |
| spatial transformer | ``transformer_blocks`` | ``BasicTransformerBlock`` |
| temporal transformer + mix | ``+pos``, ``time_stack``, ``time_mixer`` | ``TemporalBasicTransformerBlock`` |
| transformer in/out | ``norm``, ``proj_in``, positions, ``proj_out`` | rest of ``TransformerSpatioTemporalModel`` (incl. its positions and blender) |
| down/upsample | ``Downsample``/``Upsample`` | ``Downsample2D``/``Upsample2D`` |
| other | embeddings, ``input_blocks.0``, skip concat, ``out`` | the remainder of the forward |

    python -m benchmarks.profile_unet [--width 320] [--frames 14] [--size 32]
"""
import argparse
import dataclasses
import time
from collections import defaultdict

import numpy as np

from benchmarks.common import (THREADS, append_section, emit, limit_threads, peak_rss_gib, record, run_worker)

ROWS = ("spatial res", "temporal res + mix", "spatial transformer", "temporal transformer + mix",
        "transformer in/out", "down/upsample", "other")
BATCH = 2  # as bench_unet: the conditional and unconditional halves of one guided step
MATMUL_N = 2048  # square fp32 matmul used to measure the CPU's peak


def inputs(frames, size, context_dim=1024, adm=768, seed=0):
    g = np.random.default_rng(seed)
    n = BATCH * frames
    return (g.standard_normal((n, 8, size, size)).astype(np.float32), np.full((n,), 0.5, np.float32),
            g.standard_normal((n, 1, context_dim)).astype(np.float32),
            g.standard_normal((n, adm)).astype(np.float32))


def worker_mindspore(width, frames, size):
    from mindspore import Tensor, mint, nn, ops

    from exvideo_ms.backend import choices, setup_device
    from exvideo_ms.config import load_config
    from exvideo_ms.models.unet import VideoUNet
    from exvideo_ms.nn.embeddings import timestep_embedding
    from exvideo_ms.nn.resblock import from_video, to_video
    setup_device("CPU", mode=0)
    cfg = load_config("configs/svd_xt.yaml").unet
    cfg = dataclasses.replace(cfg, model_channels=width)
    unet = VideoUNet(cfg, choices=choices())
    unet.set_train(False)

    class SpatialRes(nn.Cell):
        def __init__(self, blk):
            super().__init__()
            self.blk = blk

        def construct(self, x, emb):
            return self.blk.residual(x, emb)

    class TemporalRes(nn.Cell):
        def __init__(self, blk):
            super().__init__()
            self.blk = blk

        def construct(self, x, emb, t: int):
            xs = to_video(x, t)
            xt = self.blk.time_stack(xs, emb.reshape(emb.shape[0] // t, t, emb.shape[1]))
            return from_video(self.blk.time_mixer(xs, xt))

    class TransIn(nn.Cell):
        def __init__(self, blk):
            super().__init__()
            self.blk = blk

        def construct(self, x, t: int):
            bt, c, h, w = x.shape
            y = self.blk.proj_in(mint.permute(self.blk.norm(x).reshape(bt, c, h * w), (0, 2, 1)))
            pos = self.blk.frame_positions(t).astype(y.dtype)
            pos = ops.broadcast_to(pos.reshape(1, t, 1, c), (bt // t, t, h * w, c)).reshape(bt, h * w, c)
            return y, pos

    class TemporalBlock(nn.Cell):
        def __init__(self, blk, i):
            super().__init__()
            self.blk, self.i = blk, i

        def construct(self, x, pos, time_context, t: int, h: int, w: int):
            x_mix = x + pos
            if self.blk.has_conv:
                x_mix = self.blk.positional_conv(x_mix, t, h, w)
            x_mix = self.blk.time_stack[self.i](x_mix, time_context, t)
            return self.blk.time_mixer(x, x_mix)

    class TransOut(nn.Cell):
        def __init__(self, blk):
            super().__init__()
            self.blk = blk

        def construct(self, x, x_in):
            bt, c, h, w = x_in.shape
            return mint.permute(self.blk.proj_out(x), (0, 2, 1)).reshape(bt, c, h, w) + x_in

    class Emb(nn.Cell):
        def __init__(self):
            super().__init__()
            self.u = unet

        def construct(self, t, y):
            return self.u.time_embed(timestep_embedding(t, self.u.model_channels)) + self.u.label_emb[0](y)

    class Cat(nn.Cell):
        def construct(self, a, b):
            return ops.cat([a, b], 1)

    wrappers = {}

    def cell(key, make):
        if key not in wrappers:
            wrappers[key] = make()
        return wrappers[key]

    def forward(x, tsteps, ctx, y, t, times):
        def timed(row, fn, *args):
            t0 = time.perf_counter()
            out = fn(*args)
            (out[0] if isinstance(out, tuple) else out).asnumpy()  # waits for the piece (includes one copy out)
            times[row] += time.perf_counter() - t0
            return out

        emb = timed("other", cell("emb", Emb), tsteps, y)
        time_context = ctx.reshape(ctx.shape[0] // t, t, ctx.shape[1], ctx.shape[2])[:, 0]
        hs, h = [], x
        blocks = [("in", i, b) for i, b in enumerate(unet.input_blocks)] + [("mid", 0, unet.middle_block)]
        blocks += [("out", i, b) for i, b in enumerate(unet.output_blocks)]
        for where, bi, block in blocks:
            if where == "out":
                h = timed("other", cell("cat", Cat), h, hs.pop())
            for li, (kind, layer) in enumerate(zip(block.kinds, block.cell_list)):
                key = (where, bi, li)
                if kind == "res":
                    h = timed("spatial res", cell(key + ("s",), lambda: SpatialRes(layer)), h, emb)
                    h = timed("temporal res + mix", cell(key + ("t",), lambda: TemporalRes(layer)), h, emb, t)
                elif kind == "attn":
                    x_in, (_, _, hh, ww) = h, h.shape
                    z, pos = timed("transformer in/out", cell(key + ("in",), lambda: TransIn(layer)), h, t)
                    for d in range(layer.depth):
                        z = timed("spatial transformer", layer.transformer_blocks[d], z, ctx)
                        z = timed("temporal transformer + mix", cell(key + ("tb", d), lambda: TemporalBlock(layer, d)),
                                  z, pos, time_context, t, hh, ww)
                    h = timed("transformer in/out", cell(key + ("out",), lambda: TransOut(layer)), z, x_in)
                else:
                    row = "other" if where == "in" and bi == 0 else "down/upsample"
                    h = timed(row, layer, h)
            if where == "in":
                hs.append(h)
        return timed("other", unet.out, h)

    args = [Tensor(a) for a in inputs(frames, size, cfg.context_dim, cfg.adm_in_channels)]
    unet(*args, frames).asnumpy()  # the whole UNet in one graph (compile); the pieces must give the same output
    t0 = time.perf_counter()
    reference = unet(*args, frames).asnumpy()
    whole = time.perf_counter() - t0
    first = defaultdict(float)
    forward(*args, frames, first)  # compiles every piece
    times = defaultdict(float)
    out = forward(*args, frames, times).asnumpy()
    err = float(np.abs(out - reference).max() / np.abs(reference).max())
    a = Tensor(np.random.default_rng(1).standard_normal((MATMUL_N, MATMUL_N)).astype(np.float32))
    mm = ops.matmul
    mm(a, a).asnumpy()
    t0 = time.perf_counter()
    for _ in range(3):
        mm(a, a).asnumpy()
    mm_s = (time.perf_counter() - t0) / 3
    return dict(rows={r: times[r] for r in ROWS}, total=sum(times.values()), whole=whole, err=err,
                params=int(sum(p.size for p in unet.get_parameters())), matmul_gflops=2 * MATMUL_N ** 3 / mm_s / 1e9,
                peak_rss=peak_rss_gib())


def worker_torch(width, frames, size):
    import torch
    from diffusers import UNetSpatioTemporalConditionModel
    from diffusers.models.attention import BasicTransformerBlock, TemporalBasicTransformerBlock
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D, SpatioTemporalResBlock, TemporalResnetBlock
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel
    from diffusers.models.upsampling import Upsample2D
    from torch.utils.flop_counter import FlopCounterMode
    torch.set_num_threads(THREADS)
    heads = tuple(width * m // 64 for m in (1, 2, 4, 4))
    unet = UNetSpatioTemporalConditionModel(block_out_channels=tuple(width * m for m in (1, 2, 4, 4)),
                                            num_attention_heads=heads).eval()
    x, tsteps, ctx, y = (torch.from_numpy(a) for a in inputs(frames, size))
    x, tsteps, y = x.reshape(BATCH, frames, 8, size, size), tsteps[:1].repeat(BATCH), y[::frames, :3]
    ctx = ctx[::frames]
    inclusive = defaultdict(float)
    starts = {}

    def pre(mod, _):
        starts[id(mod)] = time.perf_counter()

    def post_for(kind):
        def post(mod, _, __):
            inclusive[kind] += time.perf_counter() - starts.pop(id(mod))
        return post

    kinds = ((ResnetBlock2D, "spatial res"), (TemporalResnetBlock, "temporal res"),
             (SpatioTemporalResBlock, "res block"), (BasicTransformerBlock, "spatial transformer"),
             (TemporalBasicTransformerBlock, "temporal transformer"), (TransformerSpatioTemporalModel, "transformer"),
             (Downsample2D, "down/upsample"), (Upsample2D, "down/upsample"))
    for m in unet.modules():
        for cls, kind in kinds:
            if type(m) is cls:
                m.register_forward_pre_hook(pre)
                m.register_forward_hook(post_for(kind))
    with torch.no_grad():
        unet(x, tsteps, ctx, y)
        inclusive.clear()
        t0 = time.perf_counter()
        unet(x, tsteps, ctx, y)
        total = time.perf_counter() - t0
        timed = dict(inclusive)  # the hooks also fire during the FLOP count below: keep the timed call's figures
        counter = FlopCounterMode(display=False)
        with counter:
            unet(x, tsteps, ctx, y)
        a = torch.randn(MATMUL_N, MATMUL_N)
        a @ a
        t0 = time.perf_counter()
        for _ in range(3):
            a @ a
        mm_s = (time.perf_counter() - t0) / 3
    rows = {"spatial res": timed["spatial res"],
            "temporal res + mix": timed["res block"] - timed["spatial res"],
            "spatial transformer": timed["spatial transformer"],
            "temporal transformer + mix": timed["temporal transformer"],
            "transformer in/out": timed["transformer"] - timed["spatial transformer"]
            - timed["temporal transformer"],
            "down/upsample": timed["down/upsample"]}
    rows["other"] = total - sum(rows.values())
    return dict(rows=rows, total=total, flops=int(counter.get_total_flops()),
                params=int(sum(p.numel() for p in unet.parameters())), matmul_gflops=2 * MATMUL_N ** 3 / mm_s / 1e9,
                peak_rss=peak_rss_gib())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["ms", "torch"])
    p.add_argument("--width", type=int, default=320, help="model_channels (320 = SVD-XT)")
    p.add_argument("--frames", type=int, default=14)
    p.add_argument("--size", type=int, default=32)
    a = p.parse_args()
    if a.worker:
        limit_threads()
        emit((worker_mindspore if a.worker == "ms" else worker_torch)(a.width, a.frames, a.size))
        return
    common = ["--width", str(a.width), "--frames", str(a.frames), "--size", str(a.size)]
    m = run_worker("benchmarks.profile_unet", ["ms", *common], timeout=7200)
    t = run_worker("benchmarks.profile_unet", ["torch", *common], timeout=7200)
    lines = [f"`python -m benchmarks.profile_unet` — SVD-XT UNet at width {a.width} ({m['params']:,} parameters), "
             f"fp32, {a.frames} frames, {a.size}×{a.size} latents, batch {BATCH}; MindSpore: every piece its own graph "
             f"(sum {m['total']:.1f} s; the whole UNet as one graph {m['whole']:.1f} s; outputs agree to "
             f"{m['err']:.1e}), PyTorch: forward hooks on diffusers' modules.", "",
             "| piece | MindSpore (s) | share | PyTorch (s) | share | ms/torch |", "|---|---|---|---|---|---|"]
    for r in ROWS:
        ms_s, th_s = m["rows"][r], t["rows"][r]
        lines.append(f"| {r} | {ms_s:.2f} | {ms_s / m['total']:.0%} | {th_s:.2f} | {th_s / t['total']:.0%} | "
                     f"{ms_s / max(th_s, 1e-9):.2f} |")
    lines.append(f"| **total** | **{m['total']:.2f}** | | **{t['total']:.2f}** | | **{m['total'] / t['total']:.2f}** |")
    gf = t["flops"] / 1e9
    lines += ["", f"UNet forward: {gf:,.0f} GFLOP (torch FlopCounterMode). Achieved: MindSpore "
              f"{gf / m['whole']:.1f} GFLOP/s (whole graph) = {gf / m['whole'] / m['matmul_gflops']:.0%} of its "
              f"{MATMUL_N}² fp32 matmul rate ({m['matmul_gflops']:.1f} GFLOP/s); PyTorch {gf / t['total']:.1f} "
              f"GFLOP/s = {gf / t['total'] / t['matmul_gflops']:.0%} of its matmul rate ({t['matmul_gflops']:.1f} GFLOP/s)."]
    append_section("UNet profile by block kind", lines)
    record("profile", {"rows_ms": m["rows"], "rows_torch": t["rows"], "gflop": gf, "ms_gflops": gf / m["whole"],
                       "torch_gflops": gf / t["total"], "ms_matmul_gflops": m["matmul_gflops"],
                       "torch_matmul_gflops": t["matmul_gflops"]})


if __name__ == "__main__":
    main()
