"""Train the demo model's temporal VAE (encoder + quant_conv + VideoDecoder) with a short recipe of ours:
reconstruction (squared error on [-1, 1] pixels, the objects of the dataset's masks optionally weighted more:
--object-weight) + β·KL of the diagonal Gaussian posterior, on clips of the synthetic dataset (held in memory), in
graph mode with the project's AdamW and train step. The image encoder is a small
ViT of OpenCLIP's class with fixed random weights (seeded); it is saved with the VAE.

    python scripts/train_demo_vae.py --config configs/demo/base.yaml --data data/demo/train --output out/vae \
        --steps 1500

Writes <output>/encoders.ckpt (vae.* and image_encoder.*), <output>/<config name>.yaml with the latent scale
factor set to 1/std of the trained latents (as Stable Diffusion's 0.18215 was chosen), loss.png, log.jsonl.

A long run can be split into processes of bounded length: ``--stop-after N`` trains the first N steps of the
--steps schedule and writes <output>/resume/ (the VAE, AdamW's moments and step, the data sampler's random state);
``--resume`` with the same arguments continues from there to the end, bit for bit as one uninterrupted run when N
is a multiple of --recompile-every.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
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


RESUME_DIR = "resume"  # under --output: state-<step>.ckpt and progress.json (naming it), written by --stop-after
# the arguments a resumed run must share with the run it continues (the rest, e.g. --eval-every, may differ)
RESUME_ARGS = ("config", "data", "steps", "batch", "frames", "object_weight", "init", "lr", "seed")
HELDOUT_CLIPS = 16  # clips of the held-out split whose reconstruction PSNR is logged
# --object-weight: the object pixels' masks are grown by this many pixels, so that the antialiased border (a blend of
# the object's colour with the background's) counts as object too
OBJECT_EDGE = 1


def object_weights(labels: np.ndarray, weight: float) -> np.ndarray:
    """Per-pixel loss weights (T, 1, H, W) float32 from label maps (T, H, W) (0 = background): 1 on the background,
    1 + ``weight`` on the objects grown by OBJECT_EDGE pixels."""
    import cv2
    kernel = np.ones((2 * OBJECT_EDGE + 1,) * 2, np.uint8)
    grown = np.stack([cv2.dilate((frame > 0).astype(np.uint8), kernel) for frame in labels])
    return (1.0 + weight * grown.astype(np.float32))[:, None]


class ObjectClips:
    """Every clip of a make_synthetic_dataset.py folder with its label maps, held in memory (300 clips of 32 frames at
    64² take 160 MB): random windows of ``frames`` frames with the loss weights of ``object_weights``."""

    def __init__(self, root, frames: int, size: int, weight: float):
        from exvideo_ms.data.object_masks import read_labels
        from exvideo_ms.media import read_video
        root = Path(root)
        self.frames, self.weight, self.videos, self.labels = frames, weight, [], []
        for item in json.loads((root / "metadata.json").read_text()):
            video, labels = read_video(root / item["path"]), read_labels(root, item["path"])
            if video.shape[1:3] != (size, size) or labels.shape != video.shape[:3]:
                raise ValueError(f"{root / item['path']}: frames {video.shape[1:3]} and masks {labels.shape}, expected "
                                 f"{len(video)} frames of {size}x{size} pixels (the config's sampling size) in both")
            if len(video) < frames:
                raise ValueError(f"{root / item['path']}: {len(video)} frames, --frames asks for {frames}")
            self.videos.append(video)
            self.labels.append(labels)

    def batch(self, rng: np.random.Generator, clips: int):
        """(frames (B, T, 3, H, W) in [-1, 1], loss weights (B·T, 1, H, W)) of ``clips`` random windows."""
        from exvideo_ms.models.conditioner import to_model_range
        frames, weights = [], []
        for i in rng.integers(0, len(self.videos), clips):
            start = int(rng.integers(0, len(self.videos[i]) - self.frames + 1))
            frames.append(to_model_range(self.videos[i][start:start + self.frames]))
            weights.append(object_weights(self.labels[i][start:start + self.frames], self.weight))
        return np.stack(frames), np.concatenate(weights)


def posterior_modes(vae, clips: np.ndarray) -> np.ndarray:
    """``clips`` (B, T, 3, H, W) in [-1, 1] -> the encoder's posterior modes (B·T, z, h, w), 8 frames at a time."""
    from mindspore import Tensor
    flat = clips.reshape((-1,) + clips.shape[2:])
    return np.concatenate([vae.encode(Tensor(flat[i:i + 8])).asnumpy() for i in range(0, len(flat), 8)])


def reconstruct(vae, clips: np.ndarray, frames: int, modes: Optional[np.ndarray] = None) -> np.ndarray:
    """``clips`` (B, T, 3, H, W) in [-1, 1] through the posterior mode (``modes`` if already encoded) and the
    decoder, ``frames`` frames per decoded video -> (B·T, 3, H, W) clipped to [-1, 1]."""
    from mindspore import Tensor
    modes = posterior_modes(vae, clips) if modes is None else modes
    recon = np.concatenate([vae.decode(Tensor(modes[i:i + frames]), frames).asnumpy()
                            for i in range(0, len(modes), frames)])
    return np.clip(recon, -1, 1)


def object_psnrs(recon: np.ndarray, clips: np.ndarray, labels: np.ndarray) -> list:
    """Object-region PSNR (dB, evaluation.object_psnr on 0..255) of the first frame of every clip, for every object
    of its label map: recon (B·T, 3, H, W) and clips (B, T, 3, H, W) in [-1, 1], labels (B, T, H, W)."""
    from exvideo_ms import evaluation
    to_uint8 = lambda x: np.round((np.moveaxis(x, -3, -1) + 1) * 127.5).astype(np.uint8)  # noqa: E731
    t = clips.shape[1]
    out = []
    for b in range(len(clips)):
        frame, image = to_uint8(recon[b * t]), to_uint8(clips[b, 0])
        out += [evaluation.object_psnr(frame, image, mask) for mask in evaluation.object_masks(labels[b, 0]).values()]
    return out


class VAELoss(nn.Cell):
    """Reconstruction error + KL_WEIGHT·KL of the encoder's diagonal Gaussian, decoded by the temporal decoder. The
    error is the squared error averaged with per-pixel weights (all ones: the MSE); the plain MSE is returned too."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def construct(self, frames, eps, weights):
        """frames (B, T, 3, H, W) in [-1, 1]; eps (B·T, z, h, w) unit noise; weights (B·T, 1, H, W) -> (total, mse)."""
        b, t = frames.shape[0], frames.shape[1]
        x = frames.reshape((b * t,) + frames.shape[2:])
        moments = self.vae.quant_conv(self.vae.encoder(x))
        z_ch = moments.shape[1] // 2
        mean, logvar = moments[:, :z_ch], ops.clamp(moments[:, z_ch:], LOGVAR_RANGE[0], LOGVAR_RANGE[1])
        z = mean + ops.exp(0.5 * logvar) * eps
        recon = self.vae.decoder(z, t).astype(ms.float32)
        squared = (recon - x) ** 2
        weighted = (squared * weights).mean() / weights.mean()
        kl = 0.5 * (mean ** 2 + ops.exp(logvar) - 1.0 - logvar).mean()
        return weighted + KL_WEIGHT * kl, squared.mean()


def read_progress(folder: Path, a) -> dict:
    """progress.json of a --stop-after run in ``folder``, checked against this run's arguments ``a``."""
    file = folder / "progress.json"
    progress = json.loads(file.read_text()) if file.is_file() else None
    # "state.ckpt" when progress.json names no state file: written by this script before 2026-12-05
    if progress is None or not (folder / progress.get("state", "state.ckpt")).is_file():
        raise SystemExit(f"--resume: no stopped run in {folder} (progress.json and the state file it names, written "
                         f"by --stop-after)")
    differ = {k: (progress["args"][k], getattr(a, k)) for k in RESUME_ARGS if progress["args"][k] != getattr(a, k)}
    if differ:
        raise SystemExit(f"--resume: {folder} holds a run with other arguments; "
                         + ", ".join(f"--{k.replace('_', '-')} was {old!r}, now {new!r}" for k, (old, new) in differ.items()))
    return progress


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--data", required=True, help="dataset root with metadata.json")
    p.add_argument("--output", required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=2, help="clips per step")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (the decoder's temporal layers see them)")
    p.add_argument("--object-weight", type=float, default=0.0,
                   help="extra loss weight of the object pixels (the dataset's masks/): 1 + this on objects, 1 elsewhere")
    p.add_argument("--init", default=None,
                   help="start from the VAE of this checkpoint (an encoders.ckpt of this script) instead of random")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", type=int, default=0)
    p.add_argument("--heldout", default=None,
                   help="held-out dataset root: its reconstruction PSNR and first frames' object PSNRs are logged")
    p.add_argument("--eval-every", type=int, default=100, help="steps between held-out evaluations")
    p.add_argument("--recompile-every", type=int, default=RECOMPILE_EVERY, metavar="N",
                   help="steps per compiled train graph (the MindSpore 2.8 CPU stall workaround, see RECOMPILE_EVERY); "
                        "a stop that falls on a recompilation resumes bit for bit as one run")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop after step N of the --steps schedule and write <output>/resume/ for --resume")
    p.add_argument("--resume", action="store_true",
                   help="continue the run that --stop-after left in <output>/resume/ (same arguments)")
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error(f"--steps must be >= 1, got {a.steps}")
    if a.recompile_every < 1:
        p.error(f"--recompile-every must be >= 1, got {a.recompile_every}")
    if a.stop_after is not None and not 1 <= a.stop_after < a.steps:
        p.error(f"--stop-after must be in 1..{a.steps - 1} (--steps {a.steps}), got {a.stop_after}")
    progress = None
    if a.resume:
        progress = read_progress(Path(a.output) / RESUME_DIR, a)
        if a.stop_after is not None and a.stop_after < progress["step"]:
            p.error(f"--stop-after {a.stop_after}: the run to resume is already at step {progress['step']}")
    if a.object_weight < 0:
        p.error(f"--object-weight must be >= 0, got {a.object_weight}")
    if a.init and not Path(a.init).is_file():
        p.error(f"--init: no such file: {a.init}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if progress is not None and a.stop_after == progress["step"]:  # e.g. killed before train_demo.sh marked it done
        logging.info("--stop-after %d: the run already stopped at step %d, nothing to do", a.stop_after, a.stop_after)
        return 0
    from mindspore import Tensor
    from tqdm import tqdm

    from exvideo_ms import backend, evaluation
    from exvideo_ms.checkpoint import iter_checkpoint, load_checkpoint, save_checkpoint, save_network
    from exvideo_ms.config import load_config, save_config
    from exvideo_ms.models.conditioner import to_model_range
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
    if a.init:  # the image encoder stays the seeded one: it is not trained
        load_checkpoint(model, a.init, ignore=lambda n: not n.startswith("vae."),
                        may_miss=lambda n: n.startswith("image_encoder."))
    params = list(model.vae.get_parameters())
    loss_cell, optimizer = VAELoss(model.vae), AdamW(params, eps=1e-8, weight_decay=0.0)
    names = [prm.name for prm in params]  # the state of a stopped run: these, then AdamW's moments and step
    start, elapsed, rng_state = 0, 0.0, None
    if progress is not None:
        state_file = Path(a.output) / RESUME_DIR / progress.get("state", "state.ckpt")
        load_checkpoint(model, state_file, ignore=lambda n: not n.startswith("vae."),
                        may_miss=lambda n: n.startswith("image_encoder."))
        optimizer.load_state_dict(dict(iter_checkpoint(state_file)), names)
        start, elapsed, rng_state = progress["step"], progress["seconds"], progress["rng"]
        logging.info("resuming at step %d of %d", start, a.steps)

    def new_step():
        s = TrainStep(loss_cell, optimizer, LossScaleOptions(enable=False))  # fp32 throughout: no loss scale
        s.set_train(True)
        return s
    size = cfg.sampling.height or 64
    clips = ObjectClips(a.data, a.frames, size, a.object_weight)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.jsonl"
    # a resumed run keeps the stopped run's records (and drops those of an attempt that died after it)
    kept = [x for x in log.read_text().splitlines() if json.loads(x)["step"] <= start] if a.resume and log.is_file() else []
    log.write_text("".join(x + "\n" for x in kept))
    heldout = None
    if a.heldout:  # the first a.frames frames of HELDOUT_CLIPS held-out clips, decoded as one video each
        held = ObjectClips(a.heldout, a.frames, size, 0.0)
        heldout = (np.stack([to_model_range(v[:a.frames]) for v in held.videos[:HELDOUT_CLIPS]]),
                   np.stack([lab[:a.frames] for lab in held.labels[:HELDOUT_CLIPS]]))

    def heldout_psnrs():
        """(whole-frame PSNR over every frame on [-1, 1], object PSNRs of the first frames on 0..255)"""
        model.vae.set_train(False)
        recon = reconstruct(model.vae, heldout[0], a.frames)
        model.vae.set_train(True)
        whole = evaluation.psnr(recon, heldout[0].reshape(recon.shape), peak=2.0)
        return whole, object_psnrs(recon, *heldout)
    t_start = time.time()
    rng = np.random.default_rng(a.seed)
    if rng_state is not None:
        rng.bit_generator.state = rng_state
    f = 2 ** (len(cfg.vae.ch_mult) - 1)
    latent_shape = (a.batch * a.frames, cfg.vae.z_channels, size // f, (cfg.sampling.width or size) // f)
    record = {}
    end = a.stop_after or a.steps
    for i in tqdm(range(start, end), desc="training the demo VAE", initial=start, total=end):
        frames, weights = clips.batch(rng, a.batch)
        eps = rng.standard_normal(latent_shape).astype(np.float32)
        # 50-step warm-up, then cosine decay to a tenth
        lr_i = Tensor(a.lr * min(1.0, (i + 1) / 50) * (0.1 + 0.45 * (1 + np.cos(np.pi * i / a.steps))), ms.float32)
        if i == start or i % a.recompile_every == 0:
            if i > start:  # each discarded graph kept ~0.15 GB of runtime memory (measured), 0.68 GB/min at 1000 steps
                del step
                gc.collect()
                ms.ms_memory_recycle()
            step = new_step()  # same parameters and optimizer state, a freshly compiled graph
        total, mse, finite, _ = step(lr_i, True, Tensor(frames), Tensor(eps), Tensor(weights))
        record = {"step": i + 1, "loss": float(mse.asnumpy()), "weighted_loss": float(total.asnumpy()),
                  "overflow": not bool(finite.asnumpy())}
        if heldout is not None and ((i + 1) % a.eval_every == 0 or i + 1 == a.steps):
            whole, objects = heldout_psnrs()
            record.update(heldout_psnr_db=round(whole, 2), heldout_object_psnr_db=[round(v, 2) for v in objects])
            logging.info("step %d: held-out reconstruction PSNR %.2f dB; first frames' objects: median %.2f, "
                         "lowest %.2f dB", i + 1, whole, np.median(objects), min(objects))
        with open(log, "a") as fh:
            fh.write(json.dumps(record) + "\n")
    train_seconds = elapsed + time.time() - t_start
    if end < a.steps:
        # the state under a new name, then progress.json replaced in one rename: a kill at any moment leaves
        # progress.json naming a complete state of its own step
        folder = out / RESUME_DIR
        folder.mkdir(exist_ok=True)
        state_name = f"state-{end:07d}.ckpt"
        save_checkpoint([*((n, prm.asnumpy()) for n, prm in zip(names, params)),
                         *optimizer.state_dict(names).items()], folder / state_name)
        (folder / "progress.json.tmp").write_text(json.dumps(
            {"step": end, "state": state_name, "seconds": round(train_seconds, 1), "rng": rng.bit_generator.state,
             "args": {k: getattr(a, k) for k in RESUME_ARGS}}, indent=1))
        os.replace(folder / "progress.json.tmp", folder / "progress.json")
        for old in folder.glob("state*.ckpt"):
            if old.name != state_name:
                old.unlink()
        logging.info("stopped after step %d of %d: continue with --resume (state in %s)", end, a.steps, folder)
        return 0
    plot_loss(log, out / "loss.png", "demo VAE: reconstruction MSE and total loss")

    # latent scale: 1/std of the posterior means over training frames, so scaled latents have unit variance
    model.vae.set_train(False)
    probe = clips.batch(np.random.default_rng(10_000), 16)[0]  # 16 training windows
    modes = posterior_modes(model.vae, probe)
    scale = float(1.0 / modes.std())
    psnr = evaluation.psnr(reconstruct(model.vae, probe, a.frames, modes), probe.reshape((-1,) + probe.shape[2:]),
                           peak=2.0)
    new_cfg = dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, scale_factor=round(scale, 5)))
    save_config(new_cfg, out / f"{cfg.name}.yaml",
                header=f"# {cfg.name} with the VAE scale factor of scripts/train_demo_vae.py (1/std of the latents)")
    save_network(model, out / "encoders.ckpt")
    summary = {"steps": a.steps, "batch_clips": a.batch, "frames": a.frames,
               "object_weight": a.object_weight, "init": a.init, "seconds": round(train_seconds, 1),
               "final_mse": float(np.mean([json.loads(x)["loss"] for x in log.read_text().splitlines()[-50:]])),
               "reconstruction_psnr_db": round(psnr, 2),
               "heldout_reconstruction_psnr_db": record.get("heldout_psnr_db"),  # evaluated at the last step
               "heldout_object_psnr_db": record.get("heldout_object_psnr_db"),
               "scale_factor": round(scale, 5), "kl_weight": KL_WEIGHT}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
