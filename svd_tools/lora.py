"""LoRA files and checkpoints (exvideo_ms/lora.py):

    # a full fine-tune as a small LoRA file: truncated SVD of (tuned - base) on every attention projection
    python svd_tools/lora.py extract --config models/svd_xt.yaml --base models/svd_xt.ckpt \
        --tuned outputs/train/checkpoints/step-0001000/trainable.ckpt --rank 16 --output my_lora.safetensors
    # a LoRA merged into a checkpoint (the result loads without --SVD.lora)
    python svd_tools/lora.py merge --config models/svd_xt.yaml --checkpoint models/svd_xt.ckpt \
        --lora my_lora.safetensors [--scale 0.8] --output models/svd_xt_my.ckpt

``--tuned`` may hold only some tensors (a train.py trainable.ckpt): the others are taken from the base.
The LoRA is written in PEFT naming with diffusers' metadata (rank, alpha), so PEFT loads it onto diffusers'
UNet too. Tensors that differ but cannot be part of a LoRA (biases, norms, layers outside --targets, ExVideo's
position table) are listed, and the approximation's relative error per layer is logged. Nothing is overwritten.
"""
import argparse
import logging
import sys
from pathlib import Path


def _tensors(paths) -> dict:
    from exvideo_ms.checkpoint import iter_checkpoint
    out = {}
    for p in paths:  # later files replace earlier ones' tensors, as --SVD.checkpoint
        out.update(iter_checkpoint(p))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract", help="a LoRA from the difference of two checkpoints")
    e.add_argument("--config", required=True, help="the model's YAML (its UNet layout names the layers)")
    e.add_argument("--base", required=True, nargs="+", help="base checkpoint file(s)")
    e.add_argument("--tuned", required=True, nargs="+", help="fine-tuned checkpoint file(s), over the base")
    e.add_argument("--rank", type=int, default=16)
    e.add_argument("--targets", default=None, help="regular expression on diffusers module paths (default: every "
                                                   "attention's to_q, to_k, to_v, to_out.0)")
    e.add_argument("--output", required=True, help=".safetensors file to write")
    m = sub.add_parser("merge", help="merge LoRA files into a checkpoint")
    m.add_argument("--config", required=True)
    m.add_argument("--checkpoint", required=True, nargs="+")
    m.add_argument("--lora", required=True, nargs="+")
    m.add_argument("--scale", type=float, nargs="+", default=[1.0], help="one for all files or one per file")
    m.add_argument("--output", required=True, help=".ckpt or .safetensors file to write")
    m.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="float dtype written")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from exvideo_ms import lora
    from exvideo_ms.checkpoint import CheckpointError, save_checkpoint
    from exvideo_ms.config import ConfigError, load_config
    try:
        cfg = load_config(a.config)
        out = Path(a.output)
        if out.exists():
            raise lora.LoRAError(f"{out} exists: not overwritten (choose another --output or remove it)")
        if a.cmd == "extract":
            if out.suffix != ".safetensors":
                raise lora.LoRAError(f"--output {out}: a LoRA is written as .safetensors")
            base = _tensors(a.base)
            tuned = {**base, **_tensors(a.tuned)}
            updates, errors, left_out = lora.extract(base, tuned, cfg, a.rank, a.targets or lora.TARGETS)
            lora.write(out, updates)
            worst = max(errors, key=errors.get)
            logging.info("wrote %s: %d layers, rank %d; relative error of the approximation: median %.3g, "
                         "largest %.3g (%s)", out, len(updates), a.rank, sorted(errors.values())[len(errors) // 2],
                         errors[worst], worst)
            if left_out:
                logging.warning("%d changed tensors are not in the LoRA (not a matching layer's weight): %s%s",
                                len(left_out), ", ".join(left_out[:8]), " ..." if len(left_out) > 8 else "")
        else:
            if len(a.scale) not in (1, len(a.lora)):
                raise lora.LoRAError(f"--scale has {len(a.scale)} values for {len(a.lora)} --lora files")
            files = [lora.read(f) for f in a.lora]
            weights = _tensors(a.checkpoint)
            shapes = {n: w.shape for n, w in weights.items()}
            resolved = [lora.resolve(f, cfg, shapes) for f in files]  # every file checked before any merge
            for i, (f, updates) in enumerate(zip(files, resolved)):
                scale = a.scale[0] if len(a.scale) == 1 else a.scale[i]
                lora.merge_arrays(weights, updates, scale)
                logging.info("merged %s (%s naming, %d layers) at scale %g", f.path, f.naming, len(updates), scale)
            save_checkpoint(weights.items(), out, dtype=a.dtype)
            logging.info("wrote %s", out)
    except (lora.LoRAError, CheckpointError, ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
