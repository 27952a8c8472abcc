"""The ranks of an ``msrun`` job and the ZeRO layout they train with.

Collectives are explicit (``train/zero.py``), so the job needs only ``mindspore.communication.init()``: no
``set_auto_parallel_context``, which MindSpore 2.8 marks deprecated (in favour of ``mindspore.parallel.auto_parallel
.AutoParallel``) and whose static-graph parallel modes MindSpore 2.11's release notes retire in Q4 2026.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from exvideo_ms.train.zero import STAGES, Layout

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParallelState:
    rank: int = 0
    world: int = 1
    zero_stage: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def layout(self) -> Layout:
        return Layout(self.zero_stage, self.rank, self.world)


def init_parallel(distributed: bool, zero_stage: int = 0) -> ParallelState:
    """Join the ``msrun`` job when ``distributed`` (rank and world size from MindSpore's communication layer)."""
    if zero_stage not in STAGES:
        raise ValueError(f"--environment.zero_stage must be one of {STAGES}, got {zero_stage!r}")
    if not distributed:
        if zero_stage:
            logger.info("zero_stage %d has nothing to shard in a single process", zero_stage)
        return ParallelState(zero_stage=zero_stage)
    from mindspore.communication import get_group_size, get_rank, init
    init()
    state = ParallelState(get_rank(), get_group_size(), zero_stage)
    logger.info("rank %d of %d, data parallel, ZeRO stage %d", state.rank, state.world, zero_stage)
    return state
