"""Export the ExVideo weights of a MindSpore checkpoint as a DiffSynth-Studio patch file.

    python svd_tools/export.py --checkpoint models/exvideo_svd_128f.ckpt --output ExVideo-ours.safetensors

The input is any checkpoint of ours that holds the 16 temporal attention blocks with ExVideo's position
table and conv (a converted model, or the trainable weights that train.py saves in exvideo mode). The output
holds the 528 tensors in DiffSynth's names (blocks.N.*), float32, as the published ExVideo-SVD-128f-v1 file.
"""
import argparse
import logging
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--checkpoint", required=True, help="our .ckpt or .safetensors")
    p.add_argument("--output", required=True, help="patch to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    from pathlib import Path
    if Path(a.output).exists() and not a.overwrite:
        print(f"error: {a.output} already exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    if Path(a.output).resolve() == Path(a.checkpoint).resolve():
        print(f"error: --output {a.output} is the --checkpoint it reads", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from exvideo_ms.checkpoint import CheckpointError
    from exvideo_ms.convert.diffsynth import export_patch
    try:
        n = export_patch(a.checkpoint, a.output, progress=not a.quiet)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {n} tensors to {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
