"""The named random streams of training. Every random draw of a run comes from
``numpy.random.default_rng([seed, key, stream])``: the key is the global sample index (or, for the clip order,
the epoch), so a resumed run and a run on more ranks draw exactly what an uninterrupted single run draws."""
from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """The stream numbers (recorded in every checkpoint's state.json; changing one changes every run)."""

    SIGMA_AND_NOISE = 3  # the sample's noise level and its noise (trainer)
    CONDITION_NOISE = 5  # noise augmentation of the conditioning frame (trainer)
    CLIP_ORDER = 7  # the permutation of clips in each epoch, keyed by epoch (data)
    FRAME_WINDOW = 11  # which frames of the clip (random start) (data)
    CONDITION_DROPOUT = 13  # whether the sample's conditioning is dropped (trainer)


def stream_rng(seed: int, key: int, stream: Stream) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(key), int(stream)])


def describe() -> str:
    return ("numpy default_rng([seed, key, stream]), key = global sample index (clip order: epoch); streams "
            + ", ".join(f"{s.name.lower()} {s.value}" for s in Stream))
