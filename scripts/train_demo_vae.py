"""Train the demo model's temporal VAE (encoder + quant_conv + VideoDecoder) with a short recipe of ours:
reconstruction (mean squared error on [-1, 1] pixels) + β·KL of the diagonal Gaussian posterior, on clips of
the synthetic dataset, in graph mode with the project's AdamW and train step. The image encoder is a small
ViT of OpenCLIP's class with fixed random weights (seeded); it is saved with the VAE.

    python scripts/train_demo_vae.py --config configs/demo/base.yaml --data data/demo/train --output out/vae \
        --steps 1500

Writes <output>/encoders.ckpt (vae.* and image_encoder.*), <output>/<config name>.yaml with the latent scale
factor set to 1/std of the trained latents (as Stable Diffusion's 0.18215 was chosen), loss.png, log.jsonl.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import nn, ops

KL_WEIGHT = 1e-4  # β of our recipe: small, the latents only need to be smooth and bounded
# MindSpore 2.8 on CPU (graph mode) stalls inside one kernel after a fixed number of runs of this train graph:
# the 34th for 2 clips x 4 frames at 64 px, the 18th for 8 clips x 2 frames at 32 px, whatever the learning rate,
# loader workers, MS_ENABLE_TRACE_MEMORY=off, memory_optimize_level O0/O1, loss scaling branches or the KL term.
# A fresh graph over the same state continues, and the UNet's train graph runs hundreds of steps. So a new graph
# is compiled every RECOMPILE_EVERY steps. 4 clips x 2 frames at 64 px stall on the 34th run too (measured again
# for issue 19); each compilation takes ~22 s against ~1.5 s per step, so every 8 steps cost 4 s per step and
# every 24 (ten runs short of the stall) 2.4 s. MindSpore's compile cache does not shorten the recompilation
# (measured: 20-26 s with MS_COMPILER_CACHE_ENABLE=1).
RECOMPILE_EVERY = 24
# Start from a nearly deterministic posterior (std e^-4 ≈ 0.02): at log-variance 0 the sampling noise (std 1)
# drowns the latents and the small KL weight lets Adam move the log-variance only ~lr per step (measured: the
# reconstruction MSE stayed at ~0.1 for 250 steps).
INIT_LOGVAR = -8.0
LOGVAR_RANGE = (-30.0, 20.0)  # clamp of the posterior log-variance, as sgm's DiagonalGaussianDistribution


HELDOUT_CLIPS = 16  # clips of the held-out split whose reconstruction PSNR is logged


def posterior_modes(vae, clips: np.ndarray) -> np.ndarray:
    """``clips`` (B, T, 3, H, W) in [-1, 1] -> the encoder's posterior modes (B·T, z, h, w), 8 frames at a time."""
    from mindspore import Tensor
    flat = clips.reshape((-1,) + clips.shape[2:])
    return np.concatenate([vae.encode(Tensor(flat[i:i + 8])).asnumpy() for i in range(0, len(flat), 8)])


def reconstruction_psnr(vae, clips: np.ndarray, frames: int, modes: Optional[np.ndarray] = None) -> float:
    """PSNR (dB, peak-to-peak 2 on [-1, 1]) of ``clips`` (B, T, 3, H, W) through the posterior mode (``modes`` if
    already encoded) and the decoder, ``frames`` frames per decoded video."""
    from mindspore import Tensor

    from exvideo_ms import evaluation
    modes = posterior_modes(vae, clips) if modes is None else modes
    recon = np.concatenate([vae.decode(Tensor(modes[i:i + frames]), frames).asnumpy()
                            for i in range(0, len(modes), frames)])
    return evaluation.psnr(np.clip(recon, -1, 1), clips.reshape(recon.shape), peak=2.0)


class VAELoss(nn.Cell):
    """Reconstruction MSE + KL_WEIGHT·KL of the encoder's diagonal Gaussian, decoded by the temporal decoder."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def construct(self, frames, eps):
        """frames (B, T, 3, H, W) in [-1, 1]; eps (B·T, z, h, w) unit noise -> (total, mse)."""
        b, t = frames.shape[0], frames.shape[1]
        x = frames.reshape((b * t,) + frames.shape[2:])
        moments = self.vae.quant_conv(self.vae.encoder(x))
        z_ch = moments.shape[1] // 2
        mean, logvar = moments[:, :z_ch], ops.clamp(moments[:, z_ch:], LOGVAR_RANGE[0], LOGVAR_RANGE[1])
        z = mean + ops.exp(0.5 * logvar) * eps
        recon = self.vae.decoder(z, t).astype(ms.float32)
        mse = ((recon - x) ** 2).mean()
        kl = 0.5 * (mean ** 2 + ops.exp(logvar) - 1.0 - logvar).mean()
        return mse + KL_WEIGHT * kl, mse


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--data", required=True, help="dataset root with metadata.json")
    p.add_argument("--output", required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=2, help="clips per step")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (the decoder's temporal layers see them)")
    p.add_argument("--crop", type=int, default=0,
                   help="train on random square crops of this size (the same place in every frame of a clip): "
                        "a quarter of the pixels per clip at half the size, so 4x the clips per second")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="data loader processes (0: decode in this process)")
    p.add_argument("--heldout", default=None, help="held-out dataset root: its reconstruction PSNR is logged")
    p.add_argument("--eval-every", type=int, default=100, help="steps between held-out evaluations")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from mindspore import Tensor
    from tqdm import tqdm

    from exvideo_ms import backend
    from exvideo_ms.checkpoint import save_network
    from exvideo_ms.config import load_config, save_config
    from exvideo_ms.data.dataset import DataOptions, VideoClipSource, batches
    from exvideo_ms.models.svd import build_model
    from exvideo_ms.train.log import plot_loss
    from exvideo_ms.train.optim import AdamW
    from exvideo_ms.train.step import LossScaleOptions, TrainStep

    backend.setup_device(None, mode=a.mode)
    cfg = load_config(a.config)
    ms.set_seed(a.seed)
    model = build_model(cfg, ["vae", "image_encoder"])
    for prm in model.image_encoder.get_parameters():
        prm.requires_grad = False
    qc = model.vae.quant_conv
    bias = qc.bias.asnumpy()
    bias[cfg.vae.z_channels:] = INIT_LOGVAR
    qc.bias.set_data(Tensor(bias))
    params = list(model.vae.get_parameters())
    loss_cell, optimizer = VAELoss(model.vae), AdamW(params, eps=1e-8, weight_decay=0.0)

    def new_step():
        s = TrainStep(loss_cell, optimizer, LossScaleOptions(enable=False))  # fp32 throughout: no loss scale
        s.set_train(True)
        return s
    size = cfg.sampling.height or 64
    data = DataOptions(path=a.data, format="metadata", num_frames=a.frames, start="random", height=size,
                       width=cfg.sampling.width or size, fps=8.0, motion_bucket_id=0.0, num_workers=a.workers)
    source = VideoClipSource(data, a.seed)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.jsonl"
    log.write_text("")
    latent_shape = None
    heldout = None
    if a.heldout:  # the first a.frames frames of HELDOUT_CLIPS held-out clips, decoded as one video each
        held = DataOptions(**{**dataclasses.asdict(data), "path": a.heldout, "start": "fixed", "num_workers": 0})
        heldout = next(batches(VideoClipSource(held, a.seed), list(range(HELDOUT_CLIPS)), HELDOUT_CLIPS, 0))["frames"]

    def heldout_psnr():
        model.vae.set_train(False)
        value = reconstruction_psnr(model.vae, heldout, a.frames)
        model.vae.set_train(True)
        return value
    t_start = time.time()
    loader = batches(source, list(range(a.steps * a.batch)), a.batch, data.num_workers)
    rng = np.random.default_rng(a.seed)
    for i, batch in enumerate(tqdm(loader, total=a.steps, desc="training the demo VAE")):
        frames = batch["frames"]
        if a.crop:
            top, left = rng.integers(0, frames.shape[3] - a.crop + 1, (2, frames.shape[0]))
            frames = np.stack([f[:, :, y:y + a.crop, x:x + a.crop] for f, y, x in zip(frames, top, left)])
        if latent_shape is None:
            f = 2 ** (len(cfg.vae.ch_mult) - 1)
            latent_shape = (frames.shape[0] * frames.shape[1], cfg.vae.z_channels, frames.shape[3] // f, frames.shape[4] // f)
        eps = rng.standard_normal(latent_shape).astype(np.float32)
        # 50-step warm-up, then cosine decay to a tenth
        lr_i = Tensor(a.lr * min(1.0, (i + 1) / 50) * (0.1 + 0.45 * (1 + np.cos(np.pi * i / a.steps))), ms.float32)
        if i % RECOMPILE_EVERY == 0:
            if i:  # each discarded graph kept ~0.15 GB of runtime memory (measured), 0.68 GB/min at 1000 steps
                del step
                gc.collect()
                ms.ms_memory_recycle()
            step = new_step()  # same parameters and optimizer state, a freshly compiled graph
        total, mse, finite, _ = step(lr_i, True, Tensor(frames), Tensor(eps))
        record = {"step": i + 1, "loss": float(mse.asnumpy()), "weighted_loss": float(total.asnumpy()),
                  "overflow": not bool(finite.asnumpy())}
        if heldout is not None and ((i + 1) % a.eval_every == 0 or i + 1 == a.steps):
            record["heldout_psnr_db"] = round(heldout_psnr(), 2)
            logging.info("step %d: held-out reconstruction PSNR %.2f dB", i + 1, record["heldout_psnr_db"])
        with open(log, "a") as fh:
            fh.write(json.dumps(record) + "\n")
    train_seconds = time.time() - t_start
    plot_loss(log, out / "loss.png", "demo VAE: reconstruction MSE and total loss")

    # latent scale: 1/std of the posterior means over training frames, so scaled latents have unit variance
    model.vae.set_train(False)
    probe = next(batches(source, list(range(10_000, 10_016)), 16, 0))["frames"]
    modes = posterior_modes(model.vae, probe)
    scale = float(1.0 / modes.std())
    psnr = reconstruction_psnr(model.vae, probe, a.frames, modes)
    new_cfg = dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, scale_factor=round(scale, 5)))
    save_config(new_cfg, out / f"{cfg.name}.yaml",
                header=f"# {cfg.name} with the VAE scale factor of scripts/train_demo_vae.py (1/std of the latents)")
    save_network(model, out / "encoders.ckpt")
    summary = {"steps": a.steps, "batch_clips": a.batch, "frames": a.frames, "crop": a.crop, "seconds": round(train_seconds, 1),
               "final_mse": float(np.mean([json.loads(x)["loss"] for x in log.read_text().splitlines()[-50:]])),
               "reconstruction_psnr_db": round(psnr, 2),
               "heldout_reconstruction_psnr_db": record.get("heldout_psnr_db"),  # evaluated at the last step
               "scale_factor": round(scale, 5), "kl_weight": KL_WEIGHT}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
