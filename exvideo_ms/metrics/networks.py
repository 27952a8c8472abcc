"""The networks the scores need, the PyTorch file each one's weights come from, and how to load them.

None of these weights is bundled. Each is converted once from the file the reference implementation uses
(``svd_tools/convert_metric_network.py``, torch needed only there) into a MindSpore checkpoint, which
``load_network`` checks name by name and shape by shape against the network before it copies anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

from mindspore import nn

from exvideo_ms import backend
from exvideo_ms.checkpoint import load_checkpoint
from exvideo_ms.models.i3d import InceptionI3d
from exvideo_ms.models.inception_v3 import InceptionV3


class MissingWeights(FileNotFoundError):
    """A score needs a network whose converted weights were not given or do not exist."""


@dataclass(frozen=True)
class MetricNetwork:
    name: str
    scores: str  # which scores need it
    source_file: str  # the PyTorch weights file the reference implementation loads
    where: str  # where that file is usually found
    build: Callable[[backend.Choices], nn.Cell]
    rename: Callable[[str], Optional[str]]  # source key -> our parameter name (None: knowingly unused)


def _bn_counter(key: str) -> Optional[str]:
    """Identity, except BatchNorm's update counter, which inference never reads."""
    return None if key.endswith(".num_batches_tracked") else key


NETWORKS: Dict[str, MetricNetwork] = {
    "i3d": MetricNetwork(
        "i3d", "FVD", "i3d_pretrained_400.pt",
        "cd-fvd downloads it to cdfvd/third_party/i3d/ from https://github.com/songweige/TATS/raw/main/tats/fvd/"
        "i3d_pretrained_400.pt (piergiaj pytorch-i3d's Kinetics-400 RGB model)",
        lambda choices: InceptionI3d(choices), _bn_counter),
    "inception": MetricNetwork(
        "inception", "Inception Score and FID", "weights-inception-2015-12-05-6726825d.pth",
        "torchmetrics (through torch-fidelity) downloads it to torch's hub cache, ~/.cache/torch/hub/checkpoints/, "
        "from https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
        lambda choices: InceptionV3(), _bn_counter),
}


def spec(name: str) -> MetricNetwork:
    if name not in NETWORKS:
        raise ValueError(f"unknown metric network {name!r}; known: {', '.join(NETWORKS)}")
    return NETWORKS[name]


def convert_command(name: str) -> str:
    s = spec(name)
    return (f"python svd_tools/convert_metric_network.py --network {name} --source {s.source_file} "
            f"--output {name}.ckpt --allow-pickle")


def missing_message(name: str, path=None) -> str:
    s = spec(name)
    given = f"{path} does not exist" if path is not None else "no weights were given"
    return (f"{s.scores} needs the {name} network and {given}. Its weights come from {s.source_file} ({s.where}); "
            f"convert that file once: {convert_command(name)}")


def load_network(name: str, checkpoint, choices: Optional[backend.Choices] = None) -> nn.Cell:
    """The ``name`` network with the converted weights in ``checkpoint``, in inference mode."""
    s = spec(name)
    if checkpoint is None or not Path(checkpoint).is_file():
        raise MissingWeights(missing_message(name, checkpoint))
    net = s.build(choices or backend.choices())
    load_checkpoint(net, checkpoint)
    net.set_train(False)
    return net

