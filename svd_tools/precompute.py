"""Pre-compute the frozen encoders' outputs of a dataset, so training skips the VAE encoder and CLIP.

    python svd_tools/precompute.py --model.config m.yaml --model.checkpoint m.ckpt \
        --dataset.path data/clips --dataset.num_frames 128 --output data/clips_latents

Each clip's first ``dataset.num_frames`` frames (interval 1) are encoded once: every frame's latent × the
model's encode scale and its CLIP embedding, plus fps and motion bucket, one .npz per clip and
``precomputed.json``. Train with ``--train.dataset.format precomputed --train.dataset.path <output>``; the
trainer then samples windows of its own ``num_frames`` / ``interval`` / ``start`` from the stored frames, with
the window's first frame as the condition (no noise augmentation). Unusable clips are skipped and listed.

With ``--object_masks`` each clip's label maps (``masks/<clip>.npz`` in the dataset root, written by
scripts/make_synthetic_dataset.py) are stored too, as the share of object pixels under each latent pixel
(``object_fraction``, T × h × w): what ``--train.loss.object_weight`` weights the loss with. A clip without
its masks is then skipped and listed.
"""
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class _Model:
    config: str = "configs/exvideo_svd_128f.yaml"
    checkpoint: str = ""


def main(argv=None) -> int:
    from jsonargparse import ActionConfigFile, ArgumentParser

    from exvideo_ms.data.dataset import DataOptions
    p = ArgumentParser(description=__doc__)
    p.add_argument("--config", action=ActionConfigFile)
    p.add_argument("--model", type=_Model, default=_Model())
    p.add_argument("--dataset", type=DataOptions, default=DataOptions())
    p.add_argument("--output", type=str, required=True)
    p.add_argument("--mode", type=int, default=0)
    p.add_argument("--object_masks", type=bool, default=False,
                   help="also store each clip's object fraction per latent pixel from the dataset's masks/")
    from exvideo_ms.config import instantiate
    a = instantiate(p, p.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    import numpy as np
    from tqdm import tqdm

    from exvideo_ms import backend
    from exvideo_ms.checkpoint import load_checkpoint
    from exvideo_ms.config import load_config
    from exvideo_ms.data.dataset import VideoClipSource
    from exvideo_ms.data.object_masks import object_fraction, read_labels
    from exvideo_ms.data.sources import DatasetError
    from exvideo_ms.models.svd import build_model
    from exvideo_ms.models.conditioner import Conditioner
    backend.setup_device(None, mode=a.mode)
    cfg = load_config(a.model.config)
    model = build_model(cfg, ["vae", "image_encoder"], allocate=False)
    load_checkpoint(model, a.model.checkpoint, strict=False)
    missing = [n for n, prm in model.parameters_and_names() if prm.has_init]
    if missing:
        print(f"error: {a.model.checkpoint} lacks {len(missing)} encoder tensors, e.g. {missing[:3]}", file=sys.stderr)
        return 2
    a.dataset.start, a.dataset.interval = "fixed", 1
    root = Path(a.dataset.path)
    if a.object_masks and not (root / "masks").is_dir():
        print(f"error: --object_masks: {root / 'masks'} is not a folder (scripts/make_synthetic_dataset.py writes "
              f"the label maps there)", file=sys.stderr)
        return 2
    try:
        source = VideoClipSource(a.dataset, seed=0)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cond = Conditioner(model.vae, model.image_encoder, cfg)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    files, skipped = [], []
    for i, clip in enumerate(tqdm(source.clips, desc="encoding")):
        try:
            frames, fps, mb = source.load(clip, np.random.default_rng(0))
            labels = read_labels(root, clip.path) if a.object_masks else None
            if labels is not None and len(labels) < len(frames):
                raise DatasetError(f"{len(labels)} frames of object masks, needs {len(frames)}")
        except (DatasetError, OSError, ValueError) as e:
            skipped.append(f"{clip.path}: {e}")
            continue
        latents = cond.latents(frames).asnumpy()
        extra = {}
        if labels is not None:
            factor = frames.shape[-1] // latents.shape[-1]
            extra["object_fraction"] = object_fraction(labels[:len(frames)], a.dataset.height, a.dataset.width, factor)
        clips = cond.clip_embedding(frames).asnumpy()
        name = f"clip_{i:06d}.npz"
        np.savez(out / name, latents=latents, clip_embeddings=clips, fps=fps, motion_bucket_id=mb, **extra)
        files.append(name)
    (out / "precomputed.json").write_text(json.dumps(
        {"files": files, "skipped": skipped, "model": cfg.name, "encode_scale": cfg.vae.encode_scale,
         "num_frames": a.dataset.num_frames, "height": a.dataset.height, "width": a.dataset.width,
         "object_fraction": bool(a.object_masks)}, indent=1))
    print(f"wrote {len(files)} clips to {out} ({len(skipped)} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
