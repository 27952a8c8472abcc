"""First run on a new Ascend server: does every NPU-specific choice of exvideo_ms work here?

    python scripts/ascend_smoke.py                       # on the NPU (graph mode), writes ascend_smoke.json
    python scripts/ascend_smoke.py --emulate ascend910b  # anywhere: a 910B's choices with the contract doubles

Checks, each with its measured number (docs/ascend.md explains them):
1. the environment: MindSpore version and range, device, SoC, the backend choices for it;
2. the flash attention kernel (if the chip has it) at the documented batch limit (B = 2048) against a float64
   reference; Conv3d in float16; ops.group_norm; each against NumPy;
3. a tiny UNet, VAE decoder and image encoder (random weights) built with the chip's choices against the same
   weights built with plain attention and float32 3-D convolutions;
4. one ExVideo-mode train step of the micro model (graph mode: with recompute) — finite loss, weights move;
5. the kernel calls of the real sizes (SVD-XT 576×1024×25 with batched CFG, ExVideo 512²×128, its training),
   enumerated from the full-size networks without running them, against the documented limits.
Exit code 0 when every check passes, 1 otherwise; the report names each failure.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

logger = logging.getLogger("ascend_smoke")
TINY = REPO / "tests" / "configs" / "tiny.yaml"
MICRO = REPO / "tests" / "configs" / "micro_exvideo.yaml"
# float16 rounding of attention inputs and 3-D convolutions (bf16 models: bf16 rounding, 8 significand bits)
TOLERANCE = {"fp32": 3e-3, "fp16": 1e-2, "bf16": 5e-2}
REAL_SIZES = [  # (name, config, videos per UNet call, frames, height, width, images encoded, frames decoded)
    ("SVD-XT 576x1024x25, batched CFG", "configs/svd_xt.yaml", 2, 25, 576, 1024, 1, 14),
    ("ExVideo 512x512x128, batched CFG", "configs/exvideo_svd_128f.yaml", 2, 128, 512, 512, 1, 8),
    ("ExVideo training 512x512x128, batch 1", "configs/exvideo_svd_128f.yaml", 1, 128, 512, 512, 8, 0),
]


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def check_environment(choices) -> dict:
    import mindspore as ms
    from exvideo_ms import backend
    return {"mindspore": ms.__version__, "device": backend.device_target(), "soc": backend.ascend_soc(),
            "choices": {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in dataclasses.asdict(choices).items()}}


def check_kernels(choices) -> dict:
    import mindspore as ms
    from mindspore import Tensor
    from exvideo_ms import contracts
    from exvideo_ms.nn.attention import Kernel, dot_product_attention
    from exvideo_ms.nn.layers import Conv3d, conv3d_precision
    out = {}
    g = np.random.default_rng(0)
    if choices.flash_attention:
        b, s, n, d = contracts.FLASH_MAX_BATCH, 25, 5, 64  # SVD-XT temporal attention at the batch limit
        q, k, v = (g.standard_normal((b, s, n * d)).astype(np.float32) for _ in range(3))
        kernel = Kernel("temporal", "flash", choices.chunk_bytes, choices.emulated)
        with contracts.record() as calls:
            got = dot_product_attention(Tensor(q).astype(ms.float16), Tensor(k).astype(ms.float16),
                                        Tensor(v).astype(ms.float16), n, kernel).astype(ms.float32).asnumpy()
        qh, kh, vh = (x.astype(np.float16).astype(np.float64).reshape(b, s, n, d).transpose(0, 2, 1, 3)
                      for x in (q, k, v))
        sc = qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(d)
        p = np.exp(sc - sc.max(-1, keepdims=True))
        ref = ((p / p.sum(-1, keepdims=True)) @ vh).transpose(0, 2, 1, 3).reshape(b, s, n * d)
        err = rel_err(got, ref)
        out["flash_attention_B2048"] = {"rel_err": err, "ok": err <= 2e-3, "calls": len(calls) or None}
    conv = Conv3d(16, 16, (3, 1, 1), pad_mode="pad", padding=(1, 1, 0, 0, 0, 0), has_bias=True,
                  **conv3d_precision(choices))
    x = g.standard_normal((2, 16, 5, 6, 7)).astype(np.float32)
    w, bias = conv.weight.asnumpy().astype(np.float64), conv.bias.asnumpy().astype(np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (0, 0), (0, 0)))
    ref = sum(np.einsum("oi,bithw->bothw", w[:, :, j, 0, 0], xp[:, :, j:j + 5]) for j in range(3)) \
        + bias.reshape(1, -1, 1, 1, 1)
    err = rel_err(conv(Tensor(x)).asnumpy(), ref)
    out["conv3d"] = {"compute_dtype": choices.conv3d_dtype or "weights'", "rel_err": err, "ok": err <= 3e-3}
    from exvideo_ms.nn.norm import GroupNorm
    norm = GroupNorm(32, 1e-5, 8, choices.group_norm)
    x = (g.standard_normal((2, 32, 3, 4, 5)) * 3 + 10).astype(np.float32)
    xr = x.reshape(2, 8, -1).astype(np.float64)
    ref = ((xr - xr.mean(-1, keepdims=True)) / np.sqrt(xr.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    err = rel_err(norm(Tensor(x)).asnumpy(), ref)
    out["group_norm"] = {"impl": choices.group_norm, "rel_err": err, "ok": err <= 1e-4}
    return out


def check_networks(choices, dtype: str) -> dict:
    import mindspore as ms
    from mindspore import Tensor
    from exvideo_ms import backend, contracts
    from exvideo_ms.config import load_config
    from exvideo_ms.models.conditioner import added_time_vector, repeat_frames
    from exvideo_ms.models.svd import build_model
    from exvideo_ms.nn.precision import cast_weights
    cfg = load_config(TINY)
    plain = dataclasses.replace(choices, flash_attention=frozenset())  # the reference: plain attention
    ms.set_seed(0)
    ours, ref = build_model(cfg, choices=choices), build_model(cfg, choices=backend.resolve(plain))
    for (_, a), (_, b) in zip(ours.parameters_and_names(), ref.parameters_and_names()):
        a.set_data(b.value())
    low = backend.DTYPES[dtype]
    cast_weights(ours.unet, low)
    cast_weights(ours.image_encoder, low)
    g = np.random.default_rng(1)
    frames, h, w = 3, 48, 48  # 2,304 temporal sequences at level 0: above the kernel's batch limit
    x = g.standard_normal((frames, 8, h, w)).astype(np.float32)
    ctx = repeat_frames(Tensor(g.standard_normal((1, 1, 32)).astype(np.float32)), frames)
    y = repeat_frames(added_time_vector(Tensor(np.array([[6, 127, 0.02]], np.float32)), 8), frames)
    t = Tensor(np.full((frames,), 0.3, np.float32))
    z = Tensor(g.standard_normal((frames, 4, 16, 16)).astype(np.float32))
    pix = Tensor(g.standard_normal((1, 3, 28, 28)).astype(np.float32))
    out = {}
    with contracts.record() as calls:
        start = time.perf_counter()
        got = {"unet": ours.unet(Tensor(x).astype(low), t, ctx.astype(low), y.astype(low), frames),
               "vae_decode": ours.vae.decode(z, frames), "image_encoder": ours.image_encoder(pix.astype(low))}
        got = {k: v.astype(ms.float32).asnumpy() for k, v in got.items()}
        seconds = time.perf_counter() - start
    want = {"unet": ref.unet(Tensor(x), t, ctx, y, frames).asnumpy(), "vae_decode": ref.vae.decode(z, frames).asnumpy(),
            "image_encoder": ref.image_encoder(pix).asnumpy()}
    for name in got:
        err = rel_err(got[name], want[name])
        out[name] = {"rel_err": err, "ok": err <= TOLERANCE[dtype if name != "vae_decode" else "fp32"]}
    out["seconds_incl_compile"] = seconds
    if calls:
        out["kernel_calls_recorded"] = len(calls)
    return out


def check_train_step(choices, mode: int, frozen: str) -> dict:
    import mindspore as ms
    from mindspore import Tensor
    from exvideo_ms import backend
    from exvideo_ms.config import load_config
    from exvideo_ms.models.svd import build_model
    from exvideo_ms.train.loss import DenoisingLoss
    from exvideo_ms.train.optim import AdamW
    from exvideo_ms.train.step import LossScaleOptions, TrainStep
    from exvideo_ms.train.trainable import configure, set_recompute, trainable_names
    cfg = load_config(MICRO)
    unet = build_model(cfg, ["unet"], choices=choices).unet
    params = configure(unet, trainable_names(unet, "exvideo", True), backend.DTYPES[frozen])
    if mode == 0:
        set_recompute(unet)
    step = TrainStep(DenoisingLoss(unet, "exvideo", 1.01, 8), AdamW(params), LossScaleOptions())
    backend.set_jit_level(step, choices.jit_level)
    step.set_train(True)
    g = np.random.default_rng(2)
    batch = [g.standard_normal((1, 8, 4, 16, 16)), g.standard_normal((1, 4, 16, 16)), g.standard_normal((1, 1, 32)),
             np.array([[7, 20, 0.0]]), np.array([2.0]), g.standard_normal((1, 8, 4, 16, 16))]
    batch = [Tensor(b.astype(np.float32)) for b in batch]
    before = [p.asnumpy().copy() for p in params]
    start = time.perf_counter()
    weighted, plain, finite, scale = step(Tensor(1e-4, ms.float32), True, *batch)
    loss = float(plain.asnumpy())
    seconds = time.perf_counter() - start
    moved = max(float(np.abs(p.asnumpy() - b).max()) for p, b in zip(params, before))
    return {"loss": loss, "finite": bool(finite.asnumpy()), "max_update": moved, "recompute": mode == 0,
            "seconds_incl_compile": seconds, "ok": bool(finite.asnumpy()) and np.isfinite(loss) and moved > 0}


def check_real_sizes(choices) -> dict:
    from exvideo_ms import contracts
    from exvideo_ms.config import load_config
    from exvideo_ms.models.svd import build_model
    from exvideo_ms.nn.attention import plan
    out, models = {}, {}
    for name, config, videos, frames, height, width, encoded, decoded in REAL_SIZES:
        if config not in models:
            models[config] = build_model(load_config(REPO / config), allocate=False, choices=choices)
        m = models[config]
        calls = (m.unet.attention_calls(videos, frames, height // 8, width // 8)
                 + m.vae.attention_calls(encoded, height, width, decoded) + m.image_encoder.attention_calls(1))
        kernels = [k for c in calls for k in plan(c, choices.dtype("inference_dtype"))]
        broken = [f"{k}: {v}" for k in kernels for v in contracts.flash_violations(
            k.batch, k.seq_q, k.seq_kv, k.heads, k.head_size, k.dtype)]
        out[name] = {"attention_calls": len(calls), "largest_batch": max(c.batch for c in calls),
                     "flash_kernel_calls": len(kernels), "largest_kernel_batch": max((k.batch for k in kernels),
                                                                                    default=0),
                     "violations": broken, "ok": not broken}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device_target", default=None, help="Ascend, GPU or CPU (default: the best available)")
    parser.add_argument("--mode", type=int, default=0, choices=(0, 1), help="0: graph (default), 1: PyNative")
    parser.add_argument("--emulate", default=None, metavar="SOC",
                        help="run another chip's choices with the contract doubles (e.g. ascend910b; PyNative)")
    parser.add_argument("--dtype", default=None, choices=("fp32", "fp16", "bf16"),
                        help="the tiny networks' dtype (default: the chip's inference dtype)")
    parser.add_argument("--output", default="ascend_smoke.json", help="where the report is written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from exvideo_ms import backend
    mode = 1 if args.emulate else args.mode  # the doubles record through Python: PyNative
    backend.setup_device(args.device_target, mode=mode)
    choices = backend.resolve(backend.choices_for("Ascend", args.emulate) if args.emulate else backend.choices())
    dtype, frozen = args.dtype or choices.inference_dtype, choices.frozen_dtype
    if backend.device_target() == "CPU":  # no CPU bf16 kernels: an emulated run checks the routing in float16
        dtype, frozen = ("fp16" if d == "bf16" else d for d in (dtype, frozen))
    report, failed = {"environment": check_environment(choices), "dtype": dtype, "frozen_dtype": frozen}, []
    for name, fn in (("kernels", lambda: check_kernels(choices)), ("networks", lambda: check_networks(choices, dtype)),
                     ("train_step", lambda: check_train_step(choices, mode, frozen)),
                     ("real_sizes", lambda: check_real_sizes(choices))):
        logger.info("checking %s", name)
        try:
            result = fn()
        except Exception as e:  # report and go on: the report should name every failure at once
            result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(), "ok": False}
        report[name] = result
        if "ok" in result:
            failed += [] if result["ok"] else [name]
        else:
            failed += [f"{name}/{k}" for k, v in result.items() if isinstance(v, dict) and not v.get("ok", True)]
    report["failed"] = failed
    Path(args.output).write_text(json.dumps(report, indent=2, default=str))
    for line in (f"{k}: {json.dumps(v, default=str)}" for k, v in report.items() if k != "environment"):
        logger.info("%s", line[:400])
    logger.info("%s; report in %s", "all checks passed" if not failed else f"FAILED: {', '.join(failed)}", args.output)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
