"""The training loop: options, model setup, the per-step data/conditioning path, checkpoints and logs.

Reading order: ``train(opts)`` builds everything (model, trainable set, precision, optimizer, compiled step,
data), then loops over steps; each micro-step loads a batch, computes the frozen conditions (unless
precomputed), draws σ and noise from the samples' own seeds, and calls the compiled ``TrainStep``.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor
from tqdm.auto import tqdm

from exvideo_ms import backend
from exvideo_ms.checkpoint import CheckpointError, load_checkpoint
from exvideo_ms.config import SVDConfig, load_config, to_dict
from exvideo_ms.data.dataset import DataOptions, batches, make_source, sample_indices
from exvideo_ms.diffusion.edm import sample_sigma_grid, sample_sigma_lognormal
from exvideo_ms.models.conditioner import added_time_ids
from exvideo_ms.models.image_encoder import preprocess
from exvideo_ms.models.svd import build_model
from exvideo_ms.train import checkpoint as ckpt
from exvideo_ms.train.ema import EMA
from exvideo_ms.train.log import StepLog, plot_loss
from exvideo_ms.train.loss import DenoisingLoss, LossOptions
from exvideo_ms.train.optim import AdamW, OptimizerOptions, learning_rate
from exvideo_ms.train.parallel import ParallelState, grad_reducer, init_parallel
from exvideo_ms.train.step import LossScaleOptions, TrainStep
from exvideo_ms.train.trainable import configure, describe, set_recompute, trainable_names

logger = logging.getLogger(__name__)

ENCODE_CHUNK = 8  # frames per VAE encoder call (ExVideo encodes 8 at a time)


@dataclass
class ModelOptions:
    """``--model.*``"""

    config: str = "configs/exvideo_svd_128f.yaml"
    # weights to start from: a converted model, or a list whose later files replace earlier ones' tensors
    # (e.g. a base model and the trainable weights of an earlier run); see init_unet
    checkpoint: Optional[Union[str, List[str]]] = None
    init_unet: str = "checkpoint"  # checkpoint | scratch (the UNet starts from random init)


@dataclass
class EnvironmentOptions:
    """``--environment.*``"""

    mode: int = 0  # 0: graph (default), 1: PyNative (debugging)
    device_target: Optional[str] = None
    distributed: bool = False
    parallel_optimizer: bool = True  # Ascend only; elsewhere one warning and plain data parallel
    optimizer_shard_size: int = -1
    jit_level: Optional[str] = None


@dataclass
class EMAOptions:
    enable: bool = False
    decay: float = 0.9999


@dataclass
class ValidationOptions:
    every: int = 0  # steps between validation GIFs; 0 = never
    image: Optional[str] = None
    num_frames: int = 8
    steps: int = 10


@dataclass
class TrainOptions:
    """``--train.*``"""

    mode: str = "exvideo"  # exvideo | temporal_only | full
    output_dir: str = "outputs/train"
    max_steps: int = 1000
    batch_size: int = 1  # videos per rank and micro-step
    save_every: int = 500
    keep_last: int = 3
    resume: Optional[str] = None  # auto | a step-N directory
    seed: int = 42
    recompute: Optional[bool] = None  # None: on in graph mode
    frozen_dtype: str = "auto"  # auto (backend.Choices.frozen_dtype: bf16 Atlas A2, fp16 910A/GPU, fp32 CPU) | fp32 | fp16 | bf16
    noise_aug_strength: float = 0.0  # cond_aug of the conditioning frame (ExVideo trained with 0)
    loss: LossOptions = field(default_factory=LossOptions)
    optimizer: OptimizerOptions = field(default_factory=OptimizerOptions)
    loss_scale: LossScaleOptions = field(default_factory=LossScaleOptions)
    ema: EMAOptions = field(default_factory=EMAOptions)
    validation: ValidationOptions = field(default_factory=ValidationOptions)
    dataset: DataOptions = field(default_factory=DataOptions)


def frozen_dtype(name: str, choices: backend.Choices):
    """The dtype of the frozen weights: ``auto`` is the backend's (``Choices.frozen_dtype``)."""
    if name == "auto":
        return choices.dtype("frozen_dtype")
    if name not in backend.DTYPES:
        raise ValueError(f"frozen_dtype must be auto, fp32, fp16 or bf16, got {name!r}")
    if name == "bf16" and not choices.bf16:
        raise ValueError(f"frozen_dtype bf16 needs an Atlas A2 NPU or a GPU; {choices.device} ({choices.chip}) has "
                         f"no bfloat16 conv/matmul kernels")
    return backend.DTYPES[name]


def load_initial_weights(model, cfg: SVDConfig, path, init_unet: str) -> None:
    """Load ``path`` (one file or a list, later files replacing earlier ones' tensors) into ``model``; the only
    tensors allowed to be absent are ExVideo's additions (which keep their identity / folded-sinusoid
    initialisation) and, with ``init_unet=scratch``, the UNet. Tensors of components this run does not
    build (e.g. the encoders when training on precomputed latents) are skipped."""
    params = dict(model.parameters_and_names())
    if init_unet not in ("checkpoint", "scratch"):
        raise ValueError(f"model.init_unet must be 'checkpoint' or 'scratch', got {init_unet!r}")
    if not path:
        if init_unet != "scratch" or any(not n.startswith("unet.") for n in params):
            raise CheckpointError("model.checkpoint is required (the frozen VAE and image encoder need weights; "
                                  "only the UNet may start from scratch)")
        return
    built = {n.split(".")[0] for n in params}
    skip_unet = init_unet == "scratch"

    def ignore(name):  # components this run does not build, and the UNet when it starts from scratch
        return name.split(".")[0] not in built or (skip_unet and name.startswith("unet."))

    def may_miss(name):
        return (skip_unet and name.startswith("unet.")) or ".positional_embedding." in name \
            or ".positional_conv." in name
    owner = load_checkpoint(model, path, ignore=ignore, may_miss=may_miss)
    kept = [n for n in params if n not in owner]
    if kept:
        logger.info("%d tensors not in %s keep their initialisation (%s)", len(kept), path,
                    "UNet from scratch" if skip_unet else "ExVideo's new table and conv")


class Conditioner:
    """The frozen encoders outside the train graph: VAE latents of the frames (× encode scale), the unscaled
    conditioning latent of frame 0 (+ noise aug) and its CLIP embedding."""

    def __init__(self, model, cfg: SVDConfig):
        self.vae, self.image_encoder, self.cfg = model.vae, model.image_encoder, cfg

    def latents(self, frames: np.ndarray) -> np.ndarray:
        """(B, T, 3, H, W) in [-1, 1] -> (B, T, C, h, w) VAE modes × the encode scale."""
        b, t = frames.shape[:2]
        flat = frames.reshape((b * t,) + frames.shape[2:])
        parts = [self.vae.encode(Tensor(flat[i:i + ENCODE_CHUNK])).asnumpy() for i in range(0, len(flat), ENCODE_CHUNK)]
        return (np.concatenate(parts).reshape((b, t) + parts[0].shape[1:]) * np.float32(self.cfg.vae.encode_scale)
                ).astype(np.float32)

    def clip_embeddings(self, images: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) in [-1, 1] -> (N, 1, D) CLIP embeddings."""
        pix = preprocess(images, self.cfg.image_encoder.image_size)
        return self.image_encoder(Tensor(pix)).asnumpy()[:, None].astype(np.float32)

    def __call__(self, frames: np.ndarray, noise_aug: float, rngs) -> Dict[str, np.ndarray]:
        latents = self.latents(frames)
        first = frames[:, 0]
        if noise_aug > 0:
            noise = np.stack([r.standard_normal(first.shape[1:]) for r in rngs]).astype(np.float32)
            cond = self.vae.encode(Tensor(first + np.float32(noise_aug) * noise)).asnumpy()
        else:
            cond = latents[:, 0] / np.float32(self.cfg.vae.encode_scale)  # the clean first frame's latent
        return {"latents": latents, "cond_latent": cond.astype(np.float32),
                "clip_embedding": self.clip_embeddings(first)}


def _sample_rngs(seed: int, indices, stream: int):
    return [np.random.default_rng([seed, int(i), stream]) for i in indices]


def draw_sigma_and_noise(opts: TrainOptions, cfg: SVDConfig, indices, latent_shape):
    """σ (one per video) and unit noise, from each sample's own seed."""
    sig, noise = [], []
    for rng in _sample_rngs(opts.seed, indices, stream=3):
        if opts.loss.recipe == "exvideo":
            s = sample_sigma_grid(rng, 1, opts.loss.num_sigmas, cfg.sampling.sigma_min, cfg.sampling.sigma_max,
                                  cfg.sampling.rho)
        else:
            s = sample_sigma_lognormal(rng, 1, opts.loss.p_mean, opts.loss.p_std)
        sig.append(s[0])
        noise.append(rng.standard_normal(latent_shape))
    return np.asarray(sig, np.float32), np.stack(noise).astype(np.float32)


class Trainer:
    def __init__(self, model_opts: ModelOptions, train: TrainOptions, env: EnvironmentOptions):
        self.model_opts, self.opts, self.env = model_opts, train, env
        self.device = backend.setup_device(env.device_target, mode=env.mode)
        choices = backend.choices()
        if env.jit_level is not None:
            choices = dataclasses.replace(choices, jit_level=env.jit_level)
        self.par: ParallelState = init_parallel(env.distributed, env.parallel_optimizer, env.optimizer_shard_size)
        self.cfg = load_config(model_opts.config)
        ms.set_seed(train.seed)  # identical initialisation on every rank
        precomputed = train.dataset.format == "precomputed"
        components = ["unet"] + ([] if precomputed else ["vae", "image_encoder"])
        if train.validation.every > 0:
            components = ["unet", "vae", "image_encoder"]
        self.model = build_model(self.cfg, components, choices=choices)
        load_initial_weights(self.model, self.cfg, model_opts.checkpoint, model_opts.init_unet)
        unet = self.model.unet
        self.names = trainable_names(unet, train.mode, self.cfg.exvideo is not None)
        unet_params = dict(unet.parameters_and_names())
        low = frozen_dtype(train.frozen_dtype, choices)
        self.trainable = configure(unet, self.names, None if low == ms.float32 else low)
        for comp in components[1:]:
            for p in getattr(self.model, comp).get_parameters():
                p.requires_grad = False
        if self.par.is_main:
            logger.info("%s", describe(self.names, unet_params))
        recompute = train.recompute if train.recompute is not None else env.mode == 0
        if recompute:
            if env.mode != 0:
                raise ValueError("recompute works in graph mode (environment.mode 0)")
            logger.info("recomputing %d UNet blocks in the backward pass", set_recompute(unet))
        self.optimizer = AdamW(self.trainable, train.optimizer.betas, train.optimizer.eps, train.optimizer.weight_decay)
        loss = DenoisingLoss(unet, train.loss.recipe, train.loss.contrast_enhance_scale,
                             self.cfg.conditioning.addition_time_embed_dim)
        self.step_cell = TrainStep(loss, self.optimizer, train.loss_scale, train.optimizer.grad_clip,
                                   train.optimizer.grad_accum, grad_reducer(self.trainable, self.par), self.par.world)
        backend.set_jit_level(self.step_cell, choices.jit_level)
        self.ema = EMA(self.trainable, train.ema.decay) if train.ema.enable else None
        self.conditioner = None if precomputed else Conditioner(self.model, self.cfg)
        self.out = Path(train.output_dir)
        self.log = StepLog(self.out / "train_log.jsonl", self.par.is_main)
        self.start_step = 0

    # ---------------------------------------------------------------------------------------- state
    def _trainable_arrays(self) -> Dict[str, np.ndarray]:
        return {f"unet.{n}": p.asnumpy() for n, p in zip(self.names, self.trainable)}

    def _optimizer_arrays(self) -> Dict[str, np.ndarray]:
        out = {}
        for prefix, group in (("exp_avg", self.optimizer.exp_avg), ("exp_avg_sq", self.optimizer.exp_avg_sq)):
            for n, p in zip(self.names, group):
                out[f"{prefix}.unet.{n}"] = p.asnumpy()
        out["adamw_step"] = self.optimizer.step_count.asnumpy()
        out["loss_scale"] = self.step_cell.loss_scale.asnumpy()
        out["loss_scale_good_steps"] = self.step_cell.good_steps.asnumpy().astype(np.int64)
        return out

    def save(self, step: int) -> Optional[Path]:
        if not self.par.is_main:
            return None
        ema = ({f"unet.{n}": p.asnumpy() for n, p in zip(self.names, self.ema.shadow)} if self.ema else None)
        state = {"step": step, "seed": self.opts.seed, "mode": self.opts.mode, "world": self.par.world,
                 "samples_seen": step * self.opts.optimizer.grad_accum * self.par.world * self.opts.batch_size,
                 "rng": "numpy default_rng([seed, global sample index, stream]): data 7/11, noise 3",
                 "model_config": to_dict(self.cfg), "options": dataclasses.asdict(self.opts)}
        path = ckpt.save(self.out / "checkpoints", step, self._trainable_arrays(), self._optimizer_arrays(),
                         state, ema, self.opts.keep_last)
        plot_loss(self.log.path, self.out / "loss.png", f"{self.cfg.name}: {self.opts.mode} training")
        logger.info("saved %s", path)
        return path

    def resume(self, where: str) -> None:
        path = ckpt.latest(self.out / "checkpoints") if where == "auto" else Path(where)
        if path is None:
            logger.info("resume auto: no checkpoint in %s, starting at step 0", self.out / "checkpoints")
            return
        data = ckpt.load(path)
        if data["state"]["mode"] != self.opts.mode:
            raise CheckpointError(f"{path} was saved in mode {data['state']['mode']!r}, not {self.opts.mode!r}")
        expected = set(self._trainable_arrays())
        if set(data["trainable"]) != expected:
            raise CheckpointError(f"{path}: its trainable tensors differ from this run's "
                                  f"({len(set(data['trainable']) ^ expected)} names differ)")
        for n, p in zip(self.names, self.trainable):
            p.set_data(Tensor(data["trainable"][f"unet.{n}"]))
        opt = data["optimizer"]
        for prefix, group in (("exp_avg", self.optimizer.exp_avg), ("exp_avg_sq", self.optimizer.exp_avg_sq)):
            for n, p in zip(self.names, group):
                p.set_data(Tensor(opt[f"{prefix}.unet.{n}"]))
        self.optimizer.step_count.set_data(Tensor(opt["adamw_step"]))
        self.step_cell.loss_scale.set_data(Tensor(opt["loss_scale"]))
        self.step_cell.good_steps.set_data(Tensor(opt["loss_scale_good_steps"].astype(np.int32)))
        if self.ema is not None:
            source = data["ema"] or data["trainable"]
            for n, p in zip(self.names, self.ema.shadow):
                p.set_data(Tensor(source[f"unet.{n}"]))
        self.start_step = int(data["state"]["step"])
        self.log.truncate_after(self.start_step)
        logger.info("resumed from %s at step %d", path, self.start_step)

    # ------------------------------------------------------------------------------------------ loop
    def batch_inputs(self, batch: Dict[str, np.ndarray], indices) -> tuple:
        o = self.opts
        if self.conditioner is not None:
            cond = self.conditioner(batch["frames"], o.noise_aug_strength, _sample_rngs(o.seed, indices, 5))
        else:
            cond = {k: batch[k] for k in ("latents", "cond_latent", "clip_embedding")}
        ids = np.stack([added_time_ids(f, m, o.noise_aug_strength) for f, m in
                        zip(batch["fps"], batch["motion_bucket_id"])])
        sigma, noise = draw_sigma_and_noise(o, self.cfg, indices, cond["latents"].shape[1:])
        return (Tensor(cond["latents"]), Tensor(cond["cond_latent"]), Tensor(cond["clip_embedding"]), Tensor(ids),
                Tensor(sigma), Tensor(noise)), float(sigma.mean())

    def run(self) -> None:
        o, accum = self.opts, self.opts.optimizer.grad_accum
        if o.resume:
            self.resume(o.resume)
        source = make_source(o.dataset, o.seed)
        steps = range(self.start_step, o.max_steps)
        plan = [sample_indices(s, m, accum, self.par.rank, self.par.world, o.batch_size) for s in steps for m in range(accum)]
        flat = [i for idx in plan for i in idx]
        loader = batches(source, flat, o.batch_size, o.dataset.num_workers)
        self.step_cell.set_train(True)
        bar = tqdm(steps, desc=f"training ({o.mode})", disable=not self.par.is_main, initial=self.start_step,
                   total=o.max_steps)
        k = 0
        for step in bar:
            t0 = time.perf_counter()
            lr = Tensor(learning_rate(step, o.optimizer), ms.float32)
            skipped, sigmas = 0, []
            for micro in range(accum):
                batch = next(loader)
                inputs, sigma = self.batch_inputs(batch, plan[k])
                k += 1
                skipped += int(np.sum(batch["skipped"]))
                sigmas.append(sigma)
                weighted, plain, finite, scale = self.step_cell(lr, micro == accum - 1, *inputs)
            finite = bool(finite.asnumpy())
            if finite and self.ema is not None:
                self.ema()
            dt = time.perf_counter() - t0
            record = {"step": step + 1, "loss": float(plain.asnumpy()), "weighted_loss": float(weighted.asnumpy()),
                      "sigma": float(np.mean(sigmas)), "lr": float(lr.asnumpy()), "loss_scale": float(scale.asnumpy()),
                      "overflow": not finite, "step_time": dt,
                      "samples_per_s": accum * o.batch_size * self.par.world / dt, "skipped_clips": skipped}
            self.log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", scale=f"{record['loss_scale']:.0f}")
            if not finite:
                logger.warning("step %d: non-finite loss or gradient, update skipped, loss scale -> %g",
                               step + 1, float(self.step_cell.loss_scale.asnumpy()))
            if (step + 1) % o.save_every == 0 or step + 1 == o.max_steps:
                self.save(step + 1)
            if o.validation.every and (step + 1) % o.validation.every == 0 and self.par.is_main:
                self.validate(step + 1)

    def validate(self, step: int) -> Path:
        from exvideo_ms.media import write_gif
        from exvideo_ms.pipeline import SVDPipeline
        v = self.opts.validation
        if v.image is None:
            raise ValueError("validation.every is set but validation.image is not")
        pipe = SVDPipeline(self.model, self.cfg, dtype=None)  # the training cells themselves, dtypes as they are
        frames = pipe(v.image, num_frames=v.num_frames, num_inference_steps=v.steps, seed=self.opts.seed,
                      progress=False)
        out = self.out / "validation" / f"step-{step:07d}.gif"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_gif(frames, out, self.cfg.sampling.fps)
        self.model.unet.set_train(True)
        return out


def train(model: ModelOptions, train_opts: TrainOptions, environment: EnvironmentOptions) -> Trainer:
    trainer = Trainer(model, train_opts, environment)
    trainer.run()
    return trainer
