"""The training loop: options, model setup, the per-step data/conditioning path, checkpoints and logs.

Reading order: ``train(opts)`` builds everything (model, trainable set, precision, optimizer, compiled step,
data), then loops over steps; each micro-step loads a batch, computes the frozen conditions (unless
precomputed), draws σ and noise from the samples' own seeds, and calls the compiled ``TrainStep``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import resource
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor
from tqdm.auto import tqdm

from exvideo_ms import allocator, backend, lora, validate
from exvideo_ms.checkpoint import CheckpointError, load_checkpoint
from exvideo_ms.config import SVDConfig, load_config, to_dict
from exvideo_ms.data import streams
from exvideo_ms.data.dataset import DataOptions, batches, make_source, sample_indices
from exvideo_ms.data.streams import Stream, stream_rng
from exvideo_ms.diffusion.edm import sample_sigma_grid, sample_sigma_lognormal
from exvideo_ms.models.conditioner import Conditioner, added_time_ids
from exvideo_ms.models.exvideo import is_extension_parameter
from exvideo_ms.models.svd import build_model
from exvideo_ms.train import checkpoint as ckpt
from exvideo_ms.train import precompile
from exvideo_ms.train.ema import EMA
from exvideo_ms.train.log import StepLog, plot_loss
from exvideo_ms.train.loss import DenoisingLoss, LossOptions
from exvideo_ms.train.optim import AdamW, OptimizerOptions, learning_rate
from exvideo_ms.train.parallel import ParallelState, init_parallel
from exvideo_ms.train.state import TrainingState
from exvideo_ms.train.step import LossScaleOptions, TrainStep
from exvideo_ms.train.trainable import configure, describe, set_recompute, trainable_names
from exvideo_ms.train.zero import GradientSync

logger = logging.getLogger(__name__)



@dataclass
class ModelOptions:
    """Model (``--model.*``)."""

    config: str = "configs/exvideo_svd_128f.yaml"
    """model YAML (architecture)"""
    checkpoint: Optional[Union[str, List[str]]] = None
    """weights to start from: a converted model, or a list whose later files replace earlier ones' tensors (a base
    model and an earlier run's trainable weights)"""
    init_unet: Literal["checkpoint", "scratch"] = "checkpoint"
    """checkpoint: the UNet's weights from --model.checkpoint; scratch: random initialisation"""


@dataclass
class EnvironmentOptions:
    """Device and parallelism (``--environment.*``)."""

    mode: Literal[0, 1] = 0
    """0: graph mode (compiled, default), 1: PyNative (debugging)"""
    device_target: Optional[Literal["Ascend", "GPU", "CPU"]] = None
    """device to train on (default: the best available)"""
    distributed: bool = False
    """data parallel over the msrun workers (gradients averaged)"""
    zero_stage: Literal[0, 1, 2] = 0
    """ZeRO sharding across the msrun workers: 0 none, 1 AdamW moments, 2 moments and gradients (train/zero.py)"""
    jit_level: Optional[Literal["O0", "O1"]] = None
    """graph compilation level (default: the backend's, O0)"""
    compile_cache: Optional[str] = "auto"
    """graph mode: MindSpore's compile cache for the train step, one folder per model, option set and input shape
    under this root (auto: $XDG_CACHE_HOME/exvideo_ms/compile; null: off); a resumed or repeated run skips most of
    the first step's compilation"""
    precompile: bool = False
    """graph mode, one process: compile the train step in a short-lived child process first, so that this process
    reuses the compile cache it wrote and never holds compilation's memory (train/precompile.py)"""


@dataclass
class EMAOptions:
    """In-training exponential moving average (``--train.ema.*``)."""

    enable: bool = False
    """keep an EMA of the trainable weights, saved as ema.ckpt"""
    decay: float = 0.9999
    """EMA decay per step (0 < decay < 1)"""


@dataclass
class LoRAOptions:
    """LoRA branches trained in ``--train.mode lora`` (``--train.lora.*``; exvideo_ms/lora.py)."""

    rank: int = 16
    """rank r of every branch (>= 1; SVD_Xtend's LoRA: 16)"""
    alpha: Optional[float] = None
    """alpha: the branch is scaled by alpha / r (> 0; default: r, scale 1)"""
    targets: List[Literal["spatial_attention", "temporal_attention", "feed_forward", "exvideo"]] = field(
        default_factory=lambda: ["spatial_attention", "temporal_attention"])
    """layer kinds that get a branch: spatial_attention, temporal_attention (to_q, to_k, to_v, to_out.0 of every
    attention, as SVD_Xtend), feed_forward, exvideo (every Linear of the temporal transformers)"""
    dropout: float = 0.0
    """dropout on each branch's input (0 <= p < 1)"""


@dataclass
class ValidationOptions:
    """Validation videos (``--train.validation.*``)."""

    every: int = 0
    """steps between validation GIFs (0: never)"""
    image: Optional[str] = None
    """conditioning image of the validation video"""
    num_frames: int = 8
    """frames of the validation video"""
    steps: int = 10
    """sampling steps of the validation video"""


@dataclass
class TrainOptions:
    """Training (``--train.*``)."""

    mode: Literal["exvideo", "temporal_only", "full", "lora"] = "exvideo"
    """what trains: exvideo (the temporal attention blocks with ExVideo's table and conv), temporal_only (every
    temporal layer), full (the whole UNet), lora (LoRA branches on the layers of --train.lora.targets; each
    checkpoint also holds lora.safetensors in PEFT naming)"""
    output_dir: str = "outputs/train"
    """checkpoints/, train_log.jsonl, loss.png and validation/ go here"""
    max_steps: int = 1000
    """optimizer steps of the whole run (>= 1)"""
    batch_size: int = 1
    """videos per rank and micro-step (>= 1)"""
    save_every: int = 500
    """steps between checkpoints (>= 1; the last step is always saved)"""
    keep_last: int = 3
    """newest checkpoints kept (>= 1)"""
    resume: Optional[str] = None
    """auto (the newest complete checkpoint in output_dir) or a step-N directory"""
    overwrite: bool = False
    """start afresh in an output_dir that holds another run: its checkpoints, log, plot and validation videos
    are deleted"""
    seed: int = 42
    """initialisation and every sample's randomness (>= 0)"""
    recompute: Optional[bool] = None
    """recompute every UNet block in the backward pass (default: on in graph mode)"""
    frozen_dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """dtype of the frozen UNet weights (auto: bf16 on Atlas A2, fp16 on 910A and GPU, fp32 on CPU)"""
    noise_aug_strength: float = 0.0
    """noise added to the conditioning frame (>= 0; ExVideo trained with 0)"""
    conditioning_dropout: float = 0.0
    """probability that a sample trains without its conditioning (CLIP embedding and conditioning latent zeroed:
    the unconditional input of classifier-free guidance); 0 <= p < 1 (ExVideo and mindone: 0; SVD_Xtend: 0.1)"""
    loss: LossOptions = field(default_factory=LossOptions)
    optimizer: OptimizerOptions = field(default_factory=OptimizerOptions)
    loss_scale: LossScaleOptions = field(default_factory=LossScaleOptions)
    ema: EMAOptions = field(default_factory=EMAOptions)
    lora: LoRAOptions = field(default_factory=LoRAOptions)
    validation: ValidationOptions = field(default_factory=ValidationOptions)
    dataset: DataOptions = field(default_factory=DataOptions)


def check_options(train: TrainOptions) -> None:
    """Every numeric training option in its range (the error names the option), before anything is built."""
    o, opt, ls, d = train, train.optimizer, train.loss_scale, train.dataset
    for name, value, low in (("max_steps", o.max_steps, 1), ("batch_size", o.batch_size, 1),
                             ("save_every", o.save_every, 1), ("keep_last", o.keep_last, 1), ("seed", o.seed, 0),
                             ("optimizer.warmup_steps", opt.warmup_steps, 0), ("optimizer.grad_accum", opt.grad_accum, 1),
                             ("loss.num_sigmas", o.loss.num_sigmas, 1), ("loss_scale.window", ls.window, 1),
                             ("validation.every", o.validation.every, 0),
                             ("validation.num_frames", o.validation.num_frames, 1),
                             ("validation.steps", o.validation.steps, 1), ("dataset.num_frames", d.num_frames, 1),
                             ("dataset.interval", d.interval, 1), ("dataset.height", d.height, 8),
                             ("dataset.width", d.width, 8), ("dataset.num_workers", d.num_workers, 0)):
        validate.integer(f"--train.{name}", value, low)
    validate.number("--train.optimizer.lr", opt.lr, above=0.0)
    validate.number("--train.optimizer.eps", opt.eps, above=0.0)
    validate.number("--train.optimizer.weight_decay", opt.weight_decay, minimum=0.0)
    validate.number("--train.optimizer.grad_clip", opt.grad_clip, minimum=0.0)
    for i, beta in enumerate(opt.betas):
        validate.number(f"--train.optimizer.betas[{i}]", beta, minimum=0.0, below=1.0)
    validate.number("--train.noise_aug_strength", o.noise_aug_strength, minimum=0.0)
    validate.number("--train.conditioning_dropout", o.conditioning_dropout, minimum=0.0, below=1.0)
    validate.number("--train.loss.contrast_enhance_scale", o.loss.contrast_enhance_scale, above=0.0)
    validate.number("--train.loss.p_mean", o.loss.p_mean)
    validate.number("--train.loss.p_std", o.loss.p_std, above=0.0)
    validate.number("--train.loss.object_weight", o.loss.object_weight, minimum=0.0)
    if o.loss.object_weight > 0 and d.format != "precomputed":
        raise validate.OptionError(f"--train.loss.object_weight needs --train.dataset.format precomputed (latents "
                                   f"from svd_tools/precompute.py --object_masks), got {d.format!r}")
    validate.number("--train.loss_scale.init", ls.init, above=0.0)
    validate.number("--train.loss_scale.factor", ls.factor, above=1.0)
    validate.number("--train.loss_scale.minimum", ls.minimum, above=0.0)
    validate.number("--train.ema.decay", o.ema.decay, above=0.0, below=1.0)
    validate.integer("--train.lora.rank", o.lora.rank, 1)
    if o.lora.alpha is not None:
        validate.number("--train.lora.alpha", o.lora.alpha, above=0.0)
    validate.number("--train.lora.dropout", o.lora.dropout, minimum=0.0, below=1.0)
    if not o.lora.targets:
        raise validate.OptionError("--train.lora.targets is empty")
    if d.fps is not None:
        validate.number("--train.dataset.fps", d.fps, above=0.0)
    if d.motion_bucket_id is not None:
        validate.number("--train.dataset.motion_bucket_id", d.motion_bucket_id, minimum=0.0)
    if o.validation.every and o.validation.image is None:
        raise validate.OptionError("--train.validation.every is set but --train.validation.image is not")


# TrainOptions that never shape a compiled graph: where the run writes, how long it runs, where its data lies, and
# what the host computes before each step (the seed's streams of sigmas, noise and dropped conditions; the learning
# rate, which the step takes as an input: learning_rate). Every other option is part of the compile cache's key, so
# runs that differ in them never share a cached graph
NOT_IN_GRAPH = ("output_dir", "max_steps", "save_every", "keep_last", "resume", "overwrite", "seed",
                "conditioning_dropout")
NOT_IN_GRAPH_DATA = ("path", "list_file", "num_workers")
NOT_IN_GRAPH_OPTIMIZER = ("lr", "warmup_steps")


def compile_cache_key(cfg: SVDConfig, train: TrainOptions, env: EnvironmentOptions, choices, world: int, rank: int,
                      input_shapes) -> dict:
    """What shapes the train step's compiled graph: the model, every option except NOT_IN_GRAPH*, the backend's
    choices, the rank's place and the step's input shapes (MindSpore reuses a cached graph without checking
    them: backend.compile_cache_dir). The weights are not cached, so checkpoints are left out."""
    options = {k: v for k, v in dataclasses.asdict(train).items() if k not in NOT_IN_GRAPH}
    options["dataset"] = {k: v for k, v in options["dataset"].items() if k not in NOT_IN_GRAPH_DATA}
    options["optimizer"] = {k: v for k, v in options["optimizer"].items() if k not in NOT_IN_GRAPH_OPTIMIZER}
    environment = {k: v for k, v in dataclasses.asdict(env).items() if k not in ("compile_cache", "precompile")}
    return {"model": to_dict(cfg), "train": options, "environment": environment, "choices": dataclasses.asdict(choices),
            "world": world, "rank": rank, "inputs": [list(x) for x in input_shapes]}


# what a run writes in its output_dir (memory/: every rank's optimizer-state bytes and peak RSS)
RUN_FILES = ("checkpoints", "train_log.jsonl", "loss.png", "validation", "memory")


def prepare_output_dir(train: TrainOptions, is_main: bool) -> Path:
    """The run's output folder, checked before anything is built: it must be usable, and it must not hold
    another run's files unless this run resumes it (``--train.resume``) or replaces it (``--train.overwrite``,
    which deletes them). Mixing two runs would let keep-last delete the new run's checkpoints."""
    from exvideo_ms.media import check_output_dir
    out = check_output_dir(train.output_dir, "--train.output_dir")
    previous = [out / name for name in RUN_FILES if (out / name).exists()]
    if previous and train.resume is None:
        if not train.overwrite:
            raise validate.OptionError(
                f"--train.output_dir {out} holds another run ({', '.join(p.name for p in previous)}): continue it "
                f"with --train.resume auto, replace it with --train.overwrite true, or choose another folder")
        if is_main:
            for path in previous:
                logger.warning("--train.overwrite: deleting the previous run's %s", path)
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    return out


def checked_inputs(model_opts: ModelOptions, train: TrainOptions):
    """(model config, sample source): the options, the model config and the data checked, before the output
    folder is prepared (--train.overwrite deletes a previous run only once they have passed) and before any
    model is built."""
    check_options(train)
    return (load_config(model_opts.config),
            make_source(train.dataset, train.seed, object_fraction=train.loss.object_weight > 0))


def resume_checkpoint(train: TrainOptions) -> Optional[Path]:
    """The checkpoint ``--train.resume`` names (``auto``: the newest in the output folder, None if there is
    none), checked from its state.json alone: complete, and saved in this run's ``--train.mode``."""
    if train.resume == "auto":
        path = ckpt.latest(Path(train.output_dir) / "checkpoints")
        if path is None:
            return None
    else:
        path = Path(train.resume)
    meta = ckpt.read_meta(path)
    if meta.get("mode") != train.mode:
        raise CheckpointError(f"{path} was saved in mode {meta.get('mode')!r}, not {train.mode!r}")
    return path


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


def load_initial_weights(model, path, init_unet: str) -> None:
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
        return (skip_unet and name.startswith("unet.")) or is_extension_parameter(name)
    owner = load_checkpoint(model, path, ignore=ignore, may_miss=may_miss)
    kept = [n for n in params if n not in owner]
    if kept:
        logger.info("%d tensors not in %s keep their initialisation (%s)", len(kept), path,
                    "UNet from scratch" if skip_unet else "ExVideo's new table and conv")


def drop_conditioning(cond: Dict[str, np.ndarray], indices, seed: int, p: float) -> Dict[str, np.ndarray]:
    """``cond`` with the CLIP embedding and conditioning latent of some samples zeroed, as the sampler's
    unconditional input (Conditioning.unconditional), each sample with probability ``p`` from its own stream."""
    if p == 0:
        return cond
    drop = np.array([stream_rng(seed, i, Stream.CONDITION_DROPOUT).random() < p for i in indices])
    keep = lambda x: x * (~drop).reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)  # noqa: E731
    return {**cond, "cond_latent": keep(cond["cond_latent"]), "clip_embedding": keep(cond["clip_embedding"])}


def draw_sigma_and_noise(opts: TrainOptions, cfg: SVDConfig, indices, latent_shape):
    """σ (one per video) and unit noise, from each sample's own seed."""
    sig, noise = [], []
    for rng in (stream_rng(opts.seed, i, Stream.SIGMA_AND_NOISE) for i in indices):
        if opts.loss.recipe == "exvideo":
            s = sample_sigma_grid(rng, 1, opts.loss.num_sigmas, cfg.sampling.sigma_min, cfg.sampling.sigma_max,
                                  cfg.sampling.rho)
        else:
            s = sample_sigma_lognormal(rng, 1, opts.loss.p_mean, opts.loss.p_std)
        sig.append(s[0])
        noise.append(rng.standard_normal(latent_shape))
    return np.asarray(sig, np.float32), np.stack(noise).astype(np.float32)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Trainer:
    def __init__(self, model_opts: ModelOptions, train: TrainOptions, env: EnvironmentOptions,
                 compile_only: bool = False):
        """``compile_only``: the child of train/precompile.py, which writes nothing into the run folder."""
        self.cfg, self.source = checked_inputs(model_opts, train)  # before the output folder and the model
        self.model_opts, self.opts, self.env = model_opts, train, env
        self.device = backend.setup_device(env.device_target, mode=env.mode)
        logger.info("device_target %s, %s allocator", self.device, allocator.active())
        choices = backend.choices()
        if env.jit_level is not None:
            choices = dataclasses.replace(choices, jit_level=env.jit_level)
        self.par: ParallelState = init_parallel(env.distributed, env.zero_stage)
        self.out = Path(train.output_dir) if compile_only else prepare_output_dir(train, self.par.is_main)
        self.choices = choices
        self.cache_root = (backend.compile_cache_root(env.compile_cache, "--environment.compile_cache")
                           if env.mode == 0 else None)
        self.input_shapes = None  # of the first train step call: every later call must match with a compile cache
        ms.set_seed(train.seed)  # identical initialisation on every rank
        precomputed = train.dataset.format == "precomputed"
        components = ["unet"] + ([] if precomputed else ["vae", "image_encoder"])
        if train.validation.every > 0:
            components = ["unet", "vae", "image_encoder"]
        self.model = build_model(self.cfg, components, choices=choices)
        load_initial_weights(self.model, model_opts.checkpoint, model_opts.init_unet)
        unet = self.model.unet
        self.lora_names, self.lora_alpha = {}, None
        if train.mode == "lora":
            self.lora_alpha = float(train.lora.alpha if train.lora.alpha is not None else train.lora.rank)
            self.lora_names = lora.add_lora(unet, self.cfg, train.lora.rank, self.lora_alpha,
                                            lora.kinds_pattern(train.lora.targets), train.lora.dropout)
        self.names = trainable_names(unet, train.mode, self.cfg.exvideo is not None)
        unet_params = dict(unet.parameters_and_names())
        low = frozen_dtype(train.frozen_dtype, choices)
        self.trainable = configure(unet, self.names, None if low == ms.float32 else low)
        frozen = Counter(str(p.dtype) for p in unet.get_parameters() if not p.requires_grad)
        logger.info("UNet weights: %d trainable in Float32; frozen: %s", len(self.trainable),
                    ", ".join(f"{n} in {d}" for d, n in sorted(frozen.items())) or "none")
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
        self.optimizer = AdamW(self.trainable, train.optimizer.betas, train.optimizer.eps, train.optimizer.weight_decay,
                               self.par.layout)
        loss = DenoisingLoss(unet, train.loss.recipe, train.loss.contrast_enhance_scale,
                             self.cfg.conditioning.addition_time_embed_dim, train.loss.object_weight)
        self.step_cell = TrainStep(loss, self.optimizer, train.loss_scale, train.optimizer.grad_clip,
                                   train.optimizer.grad_accum, GradientSync(self.par.layout, choices))
        backend.set_jit_level(self.step_cell, choices.jit_level)
        self.ema = EMA(self.trainable, train.ema.decay) if train.ema.enable else None
        self.conditioner = None if precomputed else Conditioner(self.model.vae, self.model.image_encoder, self.cfg)
        self.state = TrainingState(self.names, self.trainable, self.optimizer, self.step_cell, self.ema)
        self.log = StepLog(self.out / "train_log.jsonl", self.par.is_main and not compile_only)
        self.start_step = 0

    # ---------------------------------------------------------------------------------------- state
    def save(self, step: int) -> Optional[Path]:
        """Every rank calls this (sharded optimizer state is gathered); rank 0 writes."""
        state = self.state.state_dict()
        if not self.par.is_main:
            return None
        meta = {"step": step, "seed": self.opts.seed, "mode": self.opts.mode, "world": self.par.world, "zero_stage": self.par.zero_stage,
                "samples_seen": step * self.opts.optimizer.grad_accum * self.par.world * self.opts.batch_size,
                "rng": streams.describe(), "model_config": to_dict(self.cfg), "options": dataclasses.asdict(self.opts)}
        path = ckpt.save(self.out / "checkpoints", step, state, meta, self.opts.keep_last)
        if self.lora_names:  # the LoRA in PEFT naming, for --SVD.lora, PEFT and diffusers
            for key, file in (("trainable", "lora.safetensors"), ("ema", "lora-ema.safetensors")):
                if state.get(key) is not None:
                    weights = {f"unet.{n}" if not n.startswith("unet.") else n: w for n, w in state[key].items()}
                    lora.write(path / file, lora.updates_from_weights(weights, self.lora_names, self.lora_alpha))
        plot_loss(self.log.path, self.out / "loss.png", f"{self.cfg.name}: {self.opts.mode} training")
        logger.info("saved %s", path)
        return path

    def resume(self) -> None:
        path = resume_checkpoint(self.opts)
        if path is None:
            logger.info("resume auto: no checkpoint in %s, starting at step 0", self.out / "checkpoints")
            return
        data = ckpt.load(path)
        try:
            self.state.load_state_dict(data)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None
        self.start_step = int(data["meta"]["step"])
        self.log.truncate_after(self.start_step)
        logger.info("resumed from %s at step %d", path, self.start_step)

    # ------------------------------------------------------------------------------------------ loop
    def condition(self, frames: np.ndarray, indices) -> Dict[str, np.ndarray]:
        """(B, T, 3, H, W) frames in [-1, 1] -> the loss's latents (× encode scale), the unscaled conditioning
        latent of frame 0 (noise-augmented from each sample's own stream) and frame 0's CLIP embedding."""
        b, t = frames.shape[:2]
        latents = self.conditioner.latents(frames.reshape((b * t,) + frames.shape[2:])).asnumpy()
        latents = latents.reshape((b, t) + latents.shape[1:])
        first, aug = frames[:, 0], self.opts.noise_aug_strength
        if aug > 0:
            noise = np.stack([stream_rng(self.opts.seed, i, Stream.CONDITION_NOISE).standard_normal(first.shape[1:])
                              for i in indices])
            cond = self.conditioner.condition_latent(first, aug, noise).asnumpy()
        else:  # the clean first frame's latent, already encoded
            cond = latents[:, 0] / np.float32(self.cfg.vae.encode_scale)
        return {"latents": latents.astype(np.float32), "cond_latent": cond.astype(np.float32),
                "clip_embedding": self.conditioner.clip_embedding(first).asnumpy()}

    def batch_inputs(self, batch: Dict[str, np.ndarray], indices) -> tuple:
        o = self.opts
        if self.conditioner is not None:
            cond = self.condition(batch["frames"], indices)
        else:
            cond = {k: batch[k] for k in ("latents", "cond_latent", "clip_embedding")}
        cond = drop_conditioning(cond, indices, o.seed, o.conditioning_dropout)
        ids = np.stack([added_time_ids(f, m, o.noise_aug_strength) for f, m in
                        zip(batch["fps"], batch["motion_bucket_id"])])
        sigma, noise = draw_sigma_and_noise(o, self.cfg, indices, cond["latents"].shape[1:])
        inputs = (Tensor(cond["latents"]), Tensor(cond["cond_latent"]), Tensor(cond["clip_embedding"]), Tensor(ids),
                  Tensor(sigma), Tensor(noise))
        if "object_fraction" in batch:
            inputs += (Tensor(batch["object_fraction"]),)
        return inputs, float(sigma.mean())

    def run(self) -> None:
        o, accum = self.opts, self.opts.optimizer.grad_accum
        if o.resume:
            self.resume()
        source = self.source
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
                weighted, plain, finite, scale = self.call_step(lr, micro == accum - 1, inputs, step)
            finite = bool(finite.asnumpy())
            if finite and self.ema is not None:
                self.ema()
            dt = time.perf_counter() - t0
            record = {"step": step + 1, "loss": float(plain.asnumpy()), "weighted_loss": float(weighted.asnumpy()),
                      "sigma": float(np.mean(sigmas)), "lr": float(lr.asnumpy()), "loss_scale": float(scale.asnumpy()),
                      "overflow": not finite, "step_time": dt,
                      "samples_per_s": accum * o.batch_size * self.par.world / dt, "skipped_clips": skipped,
                      "peak_rss_mib": peak_rss_mib()}
            self.log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", scale=f"{record['loss_scale']:.0f}")
            if not finite:
                logger.warning("step %d: non-finite loss or gradient, update skipped, loss scale -> %g",
                               step + 1, float(self.step_cell.loss_scale.asnumpy()))
            if (step + 1) % o.save_every == 0 or step + 1 == o.max_steps:
                self.save(step + 1)
            if o.validation.every and (step + 1) % o.validation.every == 0 and self.par.is_main:
                self.validate(step + 1)
        self.report_memory()

    def call_step(self, lr, apply: bool, inputs: tuple, step: int):
        """The compiled train step; its first call opens the compile cache keyed by the inputs' shapes (a folder
        this call created is removed if the call fails: a half-written cache is never reused)."""
        shapes = [tuple(x.shape) for x in inputs]
        if self.input_shapes is None:
            self.input_shapes = shapes
            created = None
            if self.cache_root is not None:
                key = compile_cache_key(self.cfg, self.opts, self.env, self.choices, self.par.world, self.par.rank,
                                        shapes)
                path = backend.compile_cache_dir(self.cache_root, key)
                created = None if backend.enable_compile_cache(path) else path
            try:
                return self.step_cell(lr, apply, *inputs)
            except BaseException:
                if created is not None:
                    shutil.rmtree(created, ignore_errors=True)
                raise
        if self.cache_root is not None and shapes != self.input_shapes:
            raise ValueError(f"step {step + 1}: train step inputs of shapes {shapes}, the first step's were "
                             f"{self.input_shapes}; MindSpore's compile cache would run the first step's graph on "
                             f"them: give data of one size, or --environment.compile_cache null")
        return self.step_cell(lr, apply, *inputs)

    def compile_step(self, environ) -> None:
        """Compile the train step for the first micro-batch's shapes into the compile cache without running it
        (train/precompile.py's child): the batch is loaded and conditioned as usual, then ``environ`` (os.environ)
        gets MindSpore's MS_DEV_PRECOMPILE_ONLY for the step's call alone."""
        o = self.opts
        indices = sample_indices(0, 0, o.optimizer.grad_accum, self.par.rank, self.par.world, o.batch_size)
        inputs, _ = self.batch_inputs(next(batches(self.source, indices, o.batch_size, 0)), indices)
        self.step_cell.set_train(True)
        environ[precompile.PRECOMPILE_ONLY] = "1"
        try:
            out = self.call_step(Tensor(learning_rate(0, o.optimizer), ms.float32), o.optimizer.grad_accum == 1,
                                 inputs, 0)
        finally:
            del environ[precompile.PRECOMPILE_ONLY]
        if out is not None:
            raise RuntimeError(f"MindSpore ran the train step instead of only compiling it "
                               f"({precompile.PRECOMPILE_ONLY} had no effect)")

    def report_memory(self) -> Path:
        """Every rank writes ``memory/rank-<r>.json``: the optimizer-state bytes it holds (counted from its
        tensors) and its peak RSS."""
        report = {"rank": self.par.rank, "world": self.par.world, "zero_stage": self.par.zero_stage,
                  "optimizer_state_bytes": self.optimizer.state_bytes(), "peak_rss_mib": round(peak_rss_mib(), 1)}
        path = self.out / "memory" / f"rank-{self.par.rank}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(report) + "\n")
        logger.info("rank %d: peak RSS %.0f MiB, optimizer state %d bytes", self.par.rank, report["peak_rss_mib"],
                    report["optimizer_state_bytes"])
        return path

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
        if out.exists():  # this run's own video of a step redone after a resume
            logger.info("replacing %s (step %d redone after resume)", out, step)
            out.unlink()
        write_gif(frames, out, self.cfg.sampling.fps)
        self.model.unet.set_train(True)
        return out


def train(model: ModelOptions, train_opts: TrainOptions, environment: EnvironmentOptions) -> Trainer:
    precompile.check(environment)
    if environment.precompile:
        # what the training process would refuse is refused before the child compiles, in the trainer's order
        checked_inputs(model, train_opts)
        prepare_output_dir(train_opts, True)  # emptied by --train.overwrite once the inputs above have passed
        if train_opts.resume:
            resume_checkpoint(train_opts)
        precompile.precompile(model, train_opts, environment)
    trainer = Trainer(model, train_opts, environment)
    trainer.run()
    return trainer
