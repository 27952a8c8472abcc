"""Image to video with Stable Video Diffusion / ExVideo on MindSpore (Ascend, GPU or CPU).

    python image_to_video.py --SVD.config models/svd_xt.yaml --image photo.png
    python image_to_video.py --config configs/demo/i2v.yaml          # every option from a YAML file

Flags follow mindone's SVD example (--mode, --SVD.config, --SVD.checkpoint, --SVD.num_frames, --SVD.fps,
--SVD.motion_bucket_id, --SVD.noise_aug_strength, --SVD.decode_chunk_size, --SVD.sampling_steps, --image,
--output_dir, --seed). Without --SVD.checkpoint the checkpoint beside the config is used (svd_tools/convert.py
writes the pair m.yaml / m.ckpt). Writes <output_dir>/<time>_<image>.mp4 and a .json sidecar with every
setting and the seed (and, on request, a GIF and PNG frames). Bad input exits with code 2 and writes nothing.
"""
from __future__ import annotations

import datetime
import json
import logging
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Union

logger = logging.getLogger("image_to_video")

AMP_LEVELS = {"O0": "fp32", "O2": None}  # O2: the chip's low-precision dtype (bf16 on Atlas A2, fp16 elsewhere)


@dataclass
class SVDOptions:
    """Model and sampling options (``--SVD.<name>``); unset values come from the model config."""

    config: str = "configs/svd_xt.yaml"
    checkpoint: Optional[Union[str, List[str]]] = None  # a list: later files replace earlier ones' tensors
    num_frames: Optional[int] = None
    fps: Optional[int] = None
    motion_bucket_id: Optional[int] = None
    noise_aug_strength: Optional[float] = None
    decode_chunk_size: Optional[int] = None
    sampling_steps: Optional[int] = None
    min_cfg: Optional[float] = None
    max_cfg: Optional[float] = None
    amp_level: Optional[str] = None
    dtype: Optional[str] = None
    cfg_mode: str = "batch"
    # ExVideo options (defaults from the model config; see README "ExVideo")
    contrast_enhance_scale: Optional[float] = None
    post_normalize: Optional[bool] = None
    decode_window: Optional[int] = None
    decode_stride: Optional[int] = None
    denoising_strength: float = 1.0
    input_video: Optional[str] = None
    mask_frames: Optional[List[str]] = None
    mask_frame_ids: Optional[List[int]] = None


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser
    parser = ArgumentParser(description=__doc__, exit_on_error=True)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file holding any of these options")
    parser.add_argument("--mode", type=int, default=0, help="0: graph mode (default, compiled), 1: PyNative")
    parser.add_argument("--device_target", type=Optional[str], default=None,
                        help="Ascend, GPU or CPU (default: the best available)")
    parser.add_argument("--SVD", type=SVDOptions, default=SVDOptions())
    parser.add_argument("--image", type=str, required=True, help="conditioning image (any PIL-readable file)")
    parser.add_argument("--height", type=Optional[int], default=None, help="default: the image's, rounded to 64")
    parser.add_argument("--width", type=Optional[int], default=None, help="default: the image's, rounded to 64")
    parser.add_argument("--output_dir", type=str, default="outputs")
    parser.add_argument("--seed", type=Optional[int], default=None, help="default: random (recorded in the sidecar)")
    parser.add_argument("--gif", type=bool, default=False, help="also write an animated GIF")
    parser.add_argument("--png_frames", type=bool, default=False, help="also write every frame as PNG")
    parser.add_argument("--compile_cache", type=Optional[str], default="auto",
                        help="graph mode: MindSpore's compile cache, one directory per configuration under this "
                             "root (auto: $XDG_CACHE_HOME/exvideo_ms/compile; null: off). A later run with the "
                             "same model, sizes and options skips most of the compilation")
    return parser


def resolve_dtype(opts: SVDOptions, choices) -> str:
    """--SVD.dtype, else --SVD.amp_level, else the backend's inference dtype (bf16 on Atlas A2, fp16 on 910A,
    fp32 on GPU and CPU; exvideo_ms/backend.py)."""
    from exvideo_ms.pipeline import PipelineError
    if opts.amp_level is not None and opts.amp_level not in AMP_LEVELS:
        raise PipelineError(f"--SVD.amp_level must be O0 or O2, got {opts.amp_level!r}")
    amp = None
    if opts.amp_level is not None:
        amp = AMP_LEVELS[opts.amp_level] or choices.low_precision
    if opts.dtype is not None and amp is not None and opts.dtype != amp:
        raise PipelineError(f"--SVD.dtype {opts.dtype} contradicts --SVD.amp_level {opts.amp_level} ({amp})")
    return opts.dtype or amp or choices.inference_dtype


def resolve_checkpoint(opts: SVDOptions):
    from exvideo_ms.checkpoint import CheckpointError
    if opts.checkpoint:
        return [Path(p) for p in opts.checkpoint] if isinstance(opts.checkpoint, list) else Path(opts.checkpoint)
    beside = Path(opts.config).with_suffix(".ckpt")
    if beside.is_file():
        return beside
    raise CheckpointError(f"no checkpoint: pass --SVD.checkpoint, or place {beside} beside the config "
                          f"(svd_tools/convert.py writes such pairs)")


def generate(args) -> dict:
    """Run the pipeline and write the outputs; returns the sidecar dictionary."""
    import mindspore as ms
    import numpy as np

    import exvideo_ms
    from exvideo_ms import backend, media
    from exvideo_ms.pipeline import SVDPipeline

    device = backend.setup_device(args.device_target, mode=args.mode)
    logger.info("device_target %s%s, %s mode", device, " (best available)" if args.device_target is None else "",
                "graph" if args.mode == 0 else "PyNative")
    opts: SVDOptions = args.SVD
    dtype = resolve_dtype(opts, backend.choices())
    checkpoint = resolve_checkpoint(opts)
    image = media.load_image(args.image)  # fail before the model is built
    pipe = SVDPipeline.from_config(opts.config, checkpoint, dtype=dtype)
    cache = None
    if args.mode == 0 and args.compile_cache is not None:
        root = backend.user_cache_dir("compile") if args.compile_cache == "auto" else args.compile_cache
        # everything that shapes a compiled graph; the weights do not (the checkpoint is left out)
        key = {"model": asdict(pipe.cfg), "dtype": dtype, "device": device, "image_hw": image.shape[:2],
               "height": args.height, "width": args.width,
               "SVD": {k: v for k, v in asdict(opts).items() if k not in ("config", "checkpoint")}}
        cache = backend.compile_cache_dir(root, key)
        cache = {"path": str(cache), "reused": backend.enable_compile_cache(cache)}
    frames = pipe(image, height=args.height, width=args.width, num_frames=opts.num_frames,
                  num_inference_steps=opts.sampling_steps, min_guidance_scale=opts.min_cfg,
                  max_guidance_scale=opts.max_cfg, fps=opts.fps, motion_bucket_id=opts.motion_bucket_id,
                  noise_aug_strength=opts.noise_aug_strength, decode_chunk_size=opts.decode_chunk_size,
                  seed=args.seed, output_type="np", cfg_mode=opts.cfg_mode,
                  contrast_enhance_scale=opts.contrast_enhance_scale, post_normalize=opts.post_normalize,
                  decode_window=opts.decode_window, decode_stride=opts.decode_stride,
                  denoising_strength=opts.denoising_strength, input_video=opts.input_video,
                  mask_frames=opts.mask_frames, mask_frame_ids=opts.mask_frame_ids)
    settings = pipe.settings_dict()

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}_{Path(args.image).stem}"
    written = {}
    try:
        written["mp4"] = str(media.write_mp4(frames, out_dir / f"{stem}.mp4", settings["fps"]))
        if args.gif:
            written["gif"] = str(media.write_gif(frames, out_dir / f"{stem}.gif", settings["fps"]))
        if args.png_frames:
            written["png_frames"] = str(media.write_pngs(frames, out_dir / f"{stem}_frames"))
    except Exception:
        for path in written.values():  # all or nothing
            p = Path(path)
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        raise
    sidecar = {
        "outputs": written, "image": str(args.image), "config": str(opts.config), "checkpoint": [str(c) for c in checkpoint] if isinstance(checkpoint, list) else str(checkpoint),
        "model": pipe.cfg.name, "device_target": device, "mode": args.mode, "compile_cache": cache,
        "settings": settings,
        "options": {**{k: v for k, v in vars(args).items() if k not in ("SVD", "config", "__path__")},
                    "SVD": asdict(opts)},
        "command": " ".join(sys.argv),
        "versions": {"exvideo_ms": exvideo_ms.__version__, "mindspore": ms.__version__, "numpy": np.__version__},
    }
    tmp = out_dir / f"{stem}.json.tmp"
    tmp.write_text(json.dumps(sidecar, indent=2, default=str))
    tmp.replace(out_dir / f"{stem}.json")
    logger.info("wrote %s (%d frames, %dx%d, seed %d) and %s.json", written["mp4"], frames.shape[0],
                frames.shape[2], frames.shape[1], settings["seed"], stem)
    return sidecar


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from exvideo_ms.config import instantiate
    parser = build_parser()
    args = instantiate(parser, parser.parse_args(argv))
    from exvideo_ms.checkpoint import CheckpointError
    from exvideo_ms.config import ConfigError
    from exvideo_ms.media import MediaError
    from exvideo_ms.pipeline import PipelineError
    try:
        generate(args)
    except (MediaError, CheckpointError, ConfigError, PipelineError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
