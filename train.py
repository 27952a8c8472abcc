"""Train SVD / ExVideo on MindSpore: ExVideo post-tuning (default), temporal layers only, the full UNet, or LoRA
branches (--train.mode lora: lora.safetensors in PEFT naming beside each checkpoint).

    python train.py --config configs/train/exvideo_svd_128f.yaml --train.dataset.path data/clips
    msrun --worker_num 8 --local_worker_num 8 train.py --config ... --environment.distributed true
    python train.py --config ... --train.resume auto          # continue from the newest complete checkpoint
    python train.py --config ... --train.overwrite true       # start afresh where another run was (deletes it)

Every option can be set in the YAML file and overridden on the command line (--train.optimizer.lr 2e-5,
--train.dataset.num_frames 64, ...). The train step runs compiled in graph mode (--environment.mode 1 for
PyNative debugging). Outputs in --train.output_dir: checkpoints/step-N/ (trainable weights, optimizer state),
train_log.jsonl, loss.png, validation/*.gif.
"""
from __future__ import annotations

import logging
import sys


def build_parser():
    from jsonargparse import ActionConfigFile

    from exvideo_ms.cli import parser
    from exvideo_ms.train.trainer import EnvironmentOptions, ModelOptions, TrainOptions
    p = parser(__doc__)
    p.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    p.add_argument("--model", type=ModelOptions, default=ModelOptions())
    p.add_argument("--train", type=TrainOptions, default=TrainOptions())
    p.add_argument("--environment", type=EnvironmentOptions, default=EnvironmentOptions())
    return p


def main(argv=None) -> int:
    import os

    from exvideo_ms import cli
    rank = int(os.environ.get("RANK_ID", os.environ.get("MS_NODE_ID", "0")) or 0)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")

    def action(args):
        from exvideo_ms.train.trainer import train
        train(args.model, args.train, args.environment)

    return cli.command(argv, build_parser, action)


if __name__ == "__main__":
    from exvideo_ms.allocator import relaunch
    relaunch()  # first: jemalloc is preloaded into a fresh process (exvideo_ms/allocator.py)
    sys.exit(main())
