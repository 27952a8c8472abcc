"""Convert PyTorch SVD / SVD-XT / ExVideo weights to a MindSpore checkpoint for exvideo_ms.

Examples:
  python svd_tools/convert.py --source svd_xt.safetensors --output models/svd_xt.ckpt
  python svd_tools/convert.py --source stable-video-diffusion-img2vid-xt/ --output models/svd_xt.ckpt
  python svd_tools/convert.py --source svd_xt.safetensors --source ExVideo-SVD-128f-v1.safetensors \\
      --output models/exvideo_svd_128f.ckpt
"""
import argparse
import logging
import sys
from pathlib import Path

SOURCES_HELP = """\
source layouts (recognised from the keys; --source is repeatable: one base model, optionally one patch):

  Stability single file   svd.safetensors / svd_xt.safetensors from Stability AI (generative-models names:
                          model.diffusion_model.*, first_stage_model.*, conditioner.embedders.*). Read with
                          the safetensors NumPy API, no torch needed. The architecture comes from --config
                          (default configs/svd_xt.yaml; configs/svd.yaml for the 14-frame model, same tensors).
                          252 tensors image-to-video never uses are reported as knowingly unused.

  diffusers folder        a folder with unet/, vae/, image_encoder/ (each config.json + safetensors, sharded
                          or not) and scheduler/scheduler_config.json, as on the Hugging Face Hub. The
                          architecture is read from the config.json files and the matching YAML config is
                          written beside the output (--output x/m.ckpt -> x/m.yaml).

  ExVideo patch           ExVideo-SVD-128f-v1.safetensors (DiffSynth names blocks.N.*, 528 tensors): the 16
                          temporal attention blocks with ExVideo's position table and conv, merged onto the
                          base; order of the two --source flags does not matter. Default config:
                          configs/exvideo_svd_128f.yaml.

  pickled .ckpt/.pt/.bin  read only with --allow-pickle (torch.load(weights_only=True); needs torch).

Every source key is mapped or listed as knowingly unused, every network parameter is filled exactly once
with its exact shape; otherwise the conversion stops with the offending keys and writes nothing. The
YAML config of the converted model is written beside the output.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, epilog=SOURCES_HELP, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", action="append", required=True, metavar="PATH",
                        help="weights file or diffusers folder (repeatable: a base and a patch)")
    parser.add_argument("--output", required=True, metavar="OUT.ckpt",
                        help="MindSpore checkpoint to write (.ckpt, or .safetensors for MindSpore safetensors)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="dtype of the written float tensors (default fp32)")
    parser.add_argument("--config", default=None, metavar="YAML",
                        help="architecture of a Stability single file (default configs/svd_xt.yaml, or "
                             "configs/exvideo_svd_128f.yaml with a patch)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow pickled PyTorch sources (.ckpt/.pt/.pth/.bin)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output and its YAML (a source is never written onto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from exvideo_ms.checkpoint import CheckpointError
    from exvideo_ms.config import ConfigError
    from exvideo_ms.convert.converter import ConversionError, convert
    from exvideo_ms.convert.sources import SourceError
    try:
        plan = convert(args.source, args.output, args.dtype, args.config, args.allow_pickle,
                       progress=not args.quiet, overwrite=args.overwrite)
    except (ConversionError, SourceError, ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(plan.summary())
    print(f"wrote {args.output} ({args.dtype}) and {Path(args.output).with_suffix('.yaml')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
