"""Train SVD / ExVideo on MindSpore: ExVideo post-tuning (default), temporal layers only, or the full UNet.

    python train.py --config configs/train/exvideo_svd_128f.yaml --train.dataset.path data/clips
    msrun --worker_num 8 --local_worker_num 8 train.py --config ... --environment.distributed true
    python train.py --config ... --train.resume auto          # continue from the newest complete checkpoint

Every option can be set in the YAML file and overridden on the command line (--train.optimizer.lr 2e-5,
--train.dataset.num_frames 64, ...). The train step runs compiled in graph mode (--environment.mode 1 for
PyNative debugging). Outputs in --train.output_dir: checkpoints/step-N/ (trainable weights, optimizer state),
train_log.jsonl, loss.png, validation/*.gif.
"""
from __future__ import annotations

import logging
import sys


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    from exvideo_ms.train.trainer import EnvironmentOptions, ModelOptions, TrainOptions
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_argument("--model", type=ModelOptions, default=ModelOptions())
    parser.add_argument("--train", type=TrainOptions, default=TrainOptions())
    parser.add_argument("--environment", type=EnvironmentOptions, default=EnvironmentOptions())
    return parser


def main(argv=None) -> int:
    from exvideo_ms.config import instantiate
    parser = build_parser()
    args = instantiate(parser, parser.parse_args(argv))
    import os
    rank = int(os.environ.get("RANK_ID", os.environ.get("MS_NODE_ID", "0")) or 0)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    from exvideo_ms.checkpoint import CheckpointError
    from exvideo_ms.config import ConfigError
    from exvideo_ms.data.sources import DatasetError
    from exvideo_ms.train.trainer import train
    try:
        train(args.model, args.train, args.environment)
    except (CheckpointError, ConfigError, DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
