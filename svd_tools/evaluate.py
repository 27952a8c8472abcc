"""Score generated videos against reference videos: FVD, per-frame Inception Score and FID, CLIP-I and frame
consistency, with the networks whose converted weights you give (none is bundled; see
svd_tools/convert_metric_network.py). Scores whose network is missing are listed with the file they need.

Example (the demo's videos against held-out clips of the synthetic dataset):
  python svd_tools/evaluate.py --generated outputs/demo --reference data/synthetic/heldout \\
      --i3d models/i3d.ckpt --inception models/inception.ckpt \\
      --clip_config assets/demo/demo-base.yaml --clip_checkpoint assets/demo/base.ckpt --output scores.json

Videos: ``.mp4``/``.gif`` files, or folders of PNG/JPEG frames, directly inside each folder (a dataset root's
``videos/`` is used when present). Frame sampling, deterministic and written into the JSON:
- FVD: one clip per video, ``--fvd_frames`` (16) frames from frame 0 every ``--fvd_every`` (1), resized to 224²;
- Inception Score and FID: every frame of every video, resized to 299² (``--inception_resize``);
- CLIP-I: every frame against the conditioning image (the ``image`` of the video's JSON sidecar written by
  image_to_video.py, else its first frame, as recorded per video); frame consistency: consecutive frames;
- CLIP-T: every frame against the video's prompt (``--prompt`` for all, or ``--prompts`` {video name: prompt}),
  embedded by OpenCLIP's text tower (``--clip_text``, tokenised with open_clip's ``--clip_vocab`` file).
"""
import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".gif", ".avi", ".mov", ".webm")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class EvaluationError(ValueError):
    pass


def video_key(path: Path) -> str:
    """The run a file belongs to: image_to_video.py writes ``<stem>.mp4``, ``<stem>.gif``, ``<stem>_frames/``
    and ``<stem>.json`` for one video."""
    return path.name[:-len("_frames")] if path.is_dir() and path.name.endswith("_frames") else path.stem


def list_videos(folder) -> list:
    """The videos directly inside ``folder`` (or its ``videos/``), one per run (an .mp4 before any other
    container, a GIF, then a frame folder), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder} is not a folder of videos")
    if (folder / "videos").is_dir():
        folder = folder / "videos"
    preference = lambda p: (p.is_dir(), p.suffix.lower() == ".gif", p.suffix.lower() != ".mp4")  # noqa: E731
    runs = {}
    for p in sorted(folder.iterdir()):
        if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or \
                (p.is_dir() and any(f.suffix.lower() in FRAME_SUFFIXES for f in p.iterdir())):
            key = video_key(p)
            if key not in runs or preference(p) < preference(runs[key]):
                runs[key] = p
    if not runs:
        raise EvaluationError(f"{folder} holds no videos ({', '.join(VIDEO_SUFFIXES)} files or frame folders)")
    return [runs[k] for k in sorted(runs)]


def read_frames(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    from exvideo_ms.media import load_frames
    if path.suffix.lower() == ".gif":  # OpenCV does not read GIFs
        with Image.open(path) as gif:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)])
    return load_frames(path)


def conditioning_image(video: Path, frames: np.ndarray):
    """(image, where it came from): the sidecar's ``image`` when the video has a sidecar that names an existing
    file, else the video's first frame."""
    from exvideo_ms.media import load_image
    sidecar = video.parent / f"{video_key(video)}.json"
    if sidecar.is_file():
        image = json.loads(sidecar.read_text()).get("image")
        if image and Path(image).is_file():
            return load_image(image), str(image)
    return frames[0], "first frame"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--generated", required=True, help="folder of generated videos")
    p.add_argument("--reference", help="folder of reference videos, or a dataset root with videos/")
    p.add_argument("--reference_stats", help="FVD statistics of the reference saved earlier (.npz), instead of "
                                             "computing them from --reference")
    p.add_argument("--save_reference_stats", help="write the reference's FVD statistics here (.npz), for reuse")
    p.add_argument("--i3d", help="converted I3D checkpoint (FVD)")
    p.add_argument("--inception", help="converted InceptionV3 checkpoint (Inception Score, FID)")
    p.add_argument("--clip_config", help="model YAML whose image encoder embeds frames (CLIP-I, consistency)")
    p.add_argument("--clip_checkpoint", help="checkpoint holding that image encoder (an SVD checkpoint)")
    p.add_argument("--clip_text", help="converted OpenCLIP text tower (CLIP-T)")
    p.add_argument("--clip_vocab", help="open_clip's bpe_simple_vocab_16e6.txt.gz (CLIP-T)")
    p.add_argument("--prompt", help="the prompt of every video (CLIP-T)")
    p.add_argument("--prompts", help="JSON file {video name without suffix: prompt} (CLIP-T)")
    p.add_argument("--fvd_frames", type=int, default=16)
    p.add_argument("--fvd_every", type=int, default=1)
    p.add_argument("--inception_resize", choices=("antialias", "tf1"), default="antialias",
                   help="torchmetrics' antialiased resize to 299² (default) or torch-fidelity's TF1 bilinear")
    p.add_argument("--is_splits", type=int, default=10, help="Inception Score groups (StyleGAN-V: 10)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--output", help="JSON file for the scores (never overwritten unless --overwrite)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--device", default=None, help="Ascend, GPU or CPU (default: the best available)")
    return p


def check(a) -> dict:
    """Every input checked before any network runs; returns the plan (videos and which scores run)."""
    for name in ("fvd_frames", "fvd_every", "batch_size", "is_splits"):
        if getattr(a, name) < 1:
            raise EvaluationError(f"--{name} must be an integer >= 1, got {getattr(a, name)}")
    if a.output and Path(a.output).exists() and not a.overwrite:
        raise EvaluationError(f"--output {a.output} already exists; pass --overwrite to replace it")
    if a.save_reference_stats and Path(a.save_reference_stats).exists():
        raise EvaluationError(f"--save_reference_stats {a.save_reference_stats} already exists; not overwritten")
    if a.reference and a.reference_stats:
        raise EvaluationError("give --reference or --reference_stats, not both")
    if a.save_reference_stats and not a.reference:
        raise EvaluationError("--save_reference_stats needs --reference")
    if (a.clip_config is None) != (a.clip_checkpoint is None):
        raise EvaluationError("CLIP scores need both --clip_config and --clip_checkpoint")
    if a.prompt is not None and a.prompts is not None:
        raise EvaluationError("give --prompt or --prompts, not both")
    for flag in ("reference_stats", "i3d", "inception", "clip_config", "clip_checkpoint", "clip_text", "clip_vocab",
                 "prompts"):
        value = getattr(a, flag)
        if value is not None and not Path(value).is_file():
            raise EvaluationError(f"--{flag} {value} does not exist")
    from exvideo_ms.metrics.networks import missing_message
    generated = list_videos(a.generated)
    reference = list_videos(a.reference) if a.reference else []
    plan = {"generated": generated, "reference": reference, "skipped": {}}
    has_reference = bool(reference) or bool(a.reference_stats)
    if a.i3d is None:
        plan["skipped"]["FVD"] = missing_message("i3d")
    elif not has_reference:
        plan["skipped"]["FVD"] = "needs --reference or --reference_stats"
    if a.inception is None:
        plan["skipped"]["IS"] = plan["skipped"]["FID"] = missing_message("inception")
    elif not reference:
        plan["skipped"]["FID"] = "needs --reference videos"
    if a.clip_config is None:
        plan["skipped"]["CLIP-I"] = plan["skipped"]["frame consistency"] = (
            "needs --clip_config and --clip_checkpoint (an SVD model: its OpenCLIP ViT-H/14 image encoder)")
    text_needs = [what for what, given in (("--clip_config/--clip_checkpoint (the image tower)", a.clip_config),
                                           ("--clip_text", a.clip_text), ("--clip_vocab", a.clip_vocab),
                                           ("--prompt or --prompts", a.prompt or a.prompts)) if not given]
    if text_needs:
        plan["skipped"]["CLIP-T"] = "needs " + ", ".join(text_needs) + (
            ("; " + missing_message("clip_text")) if not a.clip_text else "")
    else:
        try:
            table = json.loads(Path(a.prompts).read_text()) if a.prompts else {}
        except json.JSONDecodeError as e:
            raise EvaluationError(f"--prompts {a.prompts} is not JSON: {e}") from None
        if not isinstance(table, dict):
            raise EvaluationError(f"--prompts {a.prompts} must hold an object {{video name: prompt}}")
        plan["prompts"] = {}
        for v in generated:
            prompt = a.prompt if a.prompt is not None else table.get(video_key(v))
            if not isinstance(prompt, str):
                raise EvaluationError(f"--prompts {a.prompts} has no prompt for {video_key(v)!r}")
            plan["prompts"][v] = prompt
    # frame counts, before any network runs
    from exvideo_ms.media import video_info
    fvd_runs, is_runs = "FVD" not in plan["skipped"], "IS" not in plan["skipped"]
    counted = (generated if fvd_runs or is_runs else []) + (reference if fvd_runs else [])
    frames = {v: len(read_frames(v)) if v.is_dir() or v.suffix.lower() == ".gif" else video_info(v)["frames"]
              for v in counted}
    if is_runs and sum(frames[v] for v in generated) < a.is_splits:
        raise EvaluationError(f"the Inception Score's {a.is_splits} groups need at least as many frames; the "
                              f"generated videos have {sum(frames[v] for v in generated)} (--is_splits)")
    if fvd_runs:
        need = (a.fvd_frames - 1) * a.fvd_every + 1
        for v, n in frames.items():
            if n < need:
                raise EvaluationError(f"{v} has {n} frames; an FVD clip of {a.fvd_frames} frames every "
                                      f"{a.fvd_every} needs {need} (--fvd_frames / --fvd_every)")
        for what, videos in (("generated", generated), ("reference", reference)):
            if videos and len(videos) < 2:
                raise EvaluationError(f"FVD needs at least 2 {what} videos, found {len(videos)}")
    return plan


def evaluate(a, plan: dict) -> dict:
    import mindspore as ms

    from exvideo_ms import backend
    from exvideo_ms.metrics import clip_scores, fid, fvd, inception_score
    from exvideo_ms.metrics.frechet import FeatureStatistics, feature_statistics
    from exvideo_ms.metrics.networks import load_network
    backend.setup_device(a.device, mode=ms.PYNATIVE_MODE)
    gen, ref = plan["generated"], plan["reference"]
    scores, details = {}, {}
    protocol = {
        "FVD": f"one clip per video: {a.fvd_frames} frames from frame 0 every {a.fvd_every}, bilinear to 224x224, "
               f"I3D (Kinetics-400) logits",
        "IS/FID": f"every frame, {a.inception_resize} resize to 299x299, InceptionV3 2048-d pool features (FID) and "
                  f"unbiased logits (IS, {a.is_splits} groups in order, population deviation)",
        "CLIP": "every frame, SVD's CLIP preprocessing (antialiased to 224x224), 100 x mean cosine (clamped at 0); "
                "CLIP-T against the prompt's OpenCLIP text embedding (77 tokens)",
    }
    if "FVD" not in plan["skipped"]:
        i3d = load_network("i3d", a.i3d)
        clips = lambda videos: (fvd.sample_clip(read_frames(v), a.fvd_frames, 0, a.fvd_every) for v in videos)  # noqa
        g = feature_statistics(fvd.i3d_features(i3d, clips(gen), a.batch_size))
        if a.reference_stats:
            r = FeatureStatistics.load(a.reference_stats)
        else:
            r = feature_statistics(fvd.i3d_features(i3d, clips(ref), a.batch_size))
            if a.save_reference_stats:
                r.save(a.save_reference_stats)
        scores["FVD"] = fvd.fvd(g, r)
        details["FVD"] = {"generated_videos": g.count, "reference_videos": r.count}
    if "IS" not in plan["skipped"]:
        inception = load_network("inception", a.inception)
        frames = lambda videos: (f for v in videos for f in read_frames(v))  # noqa: E731
        pool, logits = fid.inception_outputs(inception, frames(gen), a.inception_resize, a.batch_size)
        mean, std = inception_score.inception_score(logits, a.is_splits)
        scores["IS"], scores["IS_std"] = mean, std
        details["IS"] = {"frames": len(logits)}
        if "FID" not in plan["skipped"]:
            ref_pool, _ = fid.inception_outputs(inception, frames(ref), a.inception_resize, a.batch_size)
            scores["FID"] = fid.fid_from_features(pool, ref_pool)
            details["FID"] = {"generated_frames": len(pool), "reference_frames": len(ref_pool)}
    if "CLIP-I" not in plan["skipped"]:
        from tqdm import tqdm

        from exvideo_ms.checkpoint import load_checkpoint
        from exvideo_ms.config import load_config
        from exvideo_ms.models.image_encoder import preprocess
        from exvideo_ms.models.svd import build_model
        cfg = load_config(a.clip_config)
        model = build_model(cfg, ["image_encoder"], allocate=False)
        load_checkpoint(model, a.clip_checkpoint, strict=False)
        missing = [n for n, prm in model.parameters_and_names() if prm.has_init]
        if missing:
            raise EvaluationError(f"{a.clip_checkpoint} lacks the image encoder's {missing[0]} and "
                                  f"{len(missing) - 1} more tensors")

        def embed(images: np.ndarray) -> np.ndarray:
            out = []
            for s in range(0, len(images), a.batch_size):
                x = images[s:s + a.batch_size].astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
                out.append(model.image_encoder(ms.Tensor(preprocess(x, cfg.image_encoder.image_size))).asnumpy())
            return np.concatenate(out)

        text_embedding = None
        if "CLIP-T" not in plan["skipped"]:
            from exvideo_ms.models.clip_tokenizer import ClipTokenizer
            tower = load_network("clip_text", a.clip_text)
            if tower.cfg.output_dim != cfg.image_encoder.output_dim:
                raise EvaluationError(f"the text tower embeds in {tower.cfg.output_dim} dimensions and the image "
                                      f"encoder of {a.clip_config} in {cfg.image_encoder.output_dim}: not one CLIP")
            tokenizer = ClipTokenizer(a.clip_vocab, tower.cfg.context_length)
            text_embedding = lambda prompt: tower(ms.Tensor(tokenizer(prompt))).asnumpy()[0]  # noqa: E731

        clip_i, consistency, clip_t, sources = [], [], [], []
        for v in tqdm(gen, desc="CLIP", unit="video"):
            frames = read_frames(v)
            image, source = conditioning_image(v, frames)
            emb = embed(frames)
            clip_i.append(clip_scores.clip_image_score(emb, embed(image[None])[0]))
            consistency.append(clip_scores.frame_consistency(emb))
            sources.append({"video": v.name, "conditioning_image": source})
            if text_embedding is not None:
                clip_t.append(clip_scores.clip_text_score(emb, text_embedding(plan["prompts"][v])))
                sources[-1]["prompt"] = plan["prompts"][v]
        scores["CLIP-I"], scores["frame consistency"] = float(np.mean(clip_i)), float(np.mean(consistency))
        if clip_t:
            scores["CLIP-T"] = float(np.mean(clip_t))
        details["CLIP"] = sources
    return {"scores": scores, "skipped": plan["skipped"], "protocol": protocol, "details": details,
            "generated": str(a.generated), "reference": a.reference or a.reference_stats}


def table(result: dict) -> str:
    rows = [f"{'score':<20} value"] + [f"{k:<20} {v:.4f}" for k, v in result["scores"].items()]
    rows += [f"{k:<20} not computed: {why}" for k, why in result["skipped"].items()]
    return "\n".join(rows)


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from exvideo_ms.checkpoint import CheckpointError
    from exvideo_ms.media import MediaError
    try:
        plan = check(a)
        result = evaluate(a, plan)
    except (EvaluationError, MediaError, CheckpointError, FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(result))
    if a.output:
        with open(a.output, "w" if a.overwrite else "x") as f:
            f.write(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
