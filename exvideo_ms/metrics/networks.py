"""The networks the scores need, the PyTorch file each one's weights come from, and how to load them.

None of these weights is bundled. Each is converted once from the file the reference implementation uses
(``svd_tools/convert_metric_network.py``, torch needed only there) into a MindSpore checkpoint, which
``load_network`` checks name by name and shape by shape against the network before it copies anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, Optional

import numpy as np

from mindspore import nn

from exvideo_ms import backend
from exvideo_ms.checkpoint import checkpoint_index, load_checkpoint
from exvideo_ms.models.i3d import InceptionI3d
from exvideo_ms.models.inception_v3 import InceptionV3
from exvideo_ms.models.text_encoder import TextEncoder, config_from_shapes, text_key


class MissingWeights(FileNotFoundError):
    """A score needs a network whose converted weights were not given or do not exist."""


@dataclass(frozen=True)
class MetricNetwork:
    name: str
    scores: str  # which scores need it
    source_file: str  # the PyTorch weights file the reference implementation loads
    where: str  # where that file is usually found
    build: Callable[[backend.Choices, Dict[str, tuple]], nn.Cell]  # choices, the weights' {name: shape}
    rename: Callable[[str], Optional[str]]  # source key -> our parameter name (None: knowingly unused)


def _bn_counter(key: str) -> Optional[str]:
    """Identity, except BatchNorm's update counter, which inference never reads."""
    return None if key.endswith(".num_batches_tracked") else key


NETWORKS: Dict[str, MetricNetwork] = {
    "i3d": MetricNetwork(
        "i3d", "FVD", "i3d_pretrained_400.pt",
        "cd-fvd downloads it to cdfvd/third_party/i3d/ from https://github.com/songweige/TATS/raw/main/tats/fvd/"
        "i3d_pretrained_400.pt (piergiaj pytorch-i3d's Kinetics-400 RGB model)",
        lambda choices, shapes: InceptionI3d(choices), _bn_counter),
    "inception": MetricNetwork(
        "inception", "Inception Score and FID", "weights-inception-2015-12-05-6726825d.pth",
        "torchmetrics (through torch-fidelity) downloads it to torch's hub cache, ~/.cache/torch/hub/checkpoints/, "
        "from https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
        lambda choices, shapes: InceptionV3(), _bn_counter),
    "clip_text": MetricNetwork(
        "clip_text", "CLIP-T", "open_clip_pytorch_model.bin",
        "the open_clip ViT-H/14 checkpoint of laion/CLIP-ViT-H-14-laion2B-s32B-b79K on the Hugging Face Hub (also "
        "as open_clip_model.safetensors); only its text tower is read",
        lambda choices, shapes: TextEncoder(config_from_shapes(shapes), choices=choices), text_key),
}


def batched(items: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Arrays of one shape stacked ``size`` at a time (the last stack may be smaller)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


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


def source_shapes(name: str, source) -> Dict[str, tuple]:
    """{our name: shape} of the keys of a source file (convert.sources.Source) the ``name`` network reads."""
    rename = spec(name).rename
    return {rename(k): tuple(source.shape(k)) for k in source.keys() if rename(k) is not None}


def load_network(name: str, checkpoint, choices: Optional[backend.Choices] = None) -> nn.Cell:
    """The ``name`` network with the converted weights in ``checkpoint``, in inference mode."""
    s = spec(name)
    if checkpoint is None or not Path(checkpoint).is_file():
        raise MissingWeights(missing_message(name, checkpoint))
    net = s.build(choices or backend.choices(), checkpoint_index(checkpoint))
    load_checkpoint(net, checkpoint)
    net.set_train(False)
    return net

