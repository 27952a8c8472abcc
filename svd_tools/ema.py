"""ExVideo's post-hoc EMA over the checkpoints of a training run (ExVideo_ema.py).

    python svd_tools/ema.py --run outputs/train [--gamma 0.9]

Checkpoints (``<run>/checkpoints/step-N/trainable.ckpt``) are averaged in step order: ema_0 = w_0,
ema_k = γ·ema_{k−1} + (1 − γ)·w_k. After every checkpoint the running average is written beside it as
``trainable-ema.ckpt`` (our names) and, when it holds ExVideo's 16 blocks, as ``exvideo-ema.safetensors``
(DiffSynth's patch layout, float32, as the published weights).
"""
import argparse
import logging
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="training output_dir (or its checkpoints/ folder)")
    p.add_argument("--gamma", type=float, default=None, help="decay per checkpoint (default 0.9, ExVideo's)")
    p.add_argument("--no-patch", action="store_true", help="do not write the DiffSynth-layout patch")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from exvideo_ms.checkpoint import CheckpointError, save_checkpoint
    from exvideo_ms.convert.diffsynth import export_patch
    from exvideo_ms.train.checkpoint import step_dirs
    from exvideo_ms.train.ema import POST_HOC_GAMMA, post_hoc
    root = Path(a.run)
    root = root / "checkpoints" if (root / "checkpoints").is_dir() else root
    dirs = step_dirs(root)
    if not dirs:
        print(f"error: no complete step-N checkpoints in {root}", file=sys.stderr)
        return 2
    gamma = POST_HOC_GAMMA if a.gamma is None else a.gamma
    try:
        for path, ema in post_hoc([d / "trainable.ckpt" for d in dirs], gamma):
            out = path.with_name("trainable-ema.ckpt")
            save_checkpoint(ema.items(), out)
            line = f"{out}"
            if not a.no_patch:
                try:
                    export_patch(out, path.with_name("exvideo-ema.safetensors"), progress=False)
                    line += f" and {path.with_name('exvideo-ema.safetensors').name}"
                except CheckpointError as e:
                    logging.info("no DiffSynth patch for %s: %s", out, e)
            print(line)
    except (ValueError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
