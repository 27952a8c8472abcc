"""Data parallelism under ``msrun`` and optimizer-parallel sharding where the backend has it.

- every backend: data parallel, gradients averaged across ranks (``DistributedGradReducer``);
- Ascend: optionally MindSpore's optimizer parallelism (``enable_parallel_optimizer``, semi-auto parallel
  with data-parallel strategies, shard size configurable). Other backends raise "only supports Ascend"
  for it (measured on CPU), so we warn once and keep plain data parallel.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import mindspore as ms

from exvideo_ms import backend

logger = logging.getLogger(__name__)


@dataclass
class ParallelState:
    rank: int = 0
    world: int = 1
    optimizer_parallel: bool = False

    @property
    def distributed(self) -> bool:
        return self.world > 1 or self.optimizer_parallel

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_parallel(distributed: bool, parallel_optimizer: bool, shard_size: int = -1) -> ParallelState:
    if not distributed:
        return ParallelState()
    from mindspore.communication import get_group_size, get_rank, init
    init()
    rank, world = get_rank(), get_group_size()
    use_po = parallel_optimizer and backend.choices().parallel_optimizer
    if parallel_optimizer and not use_po:
        logger.warning("optimizer-parallel sharding needs Ascend (MindSpore raises 'only supports Ascend' on %s): "
                       "training with plain data parallel, full optimizer state on every rank",
                       backend.device_target())
    ms.reset_auto_parallel_context()
    if use_po:
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.SEMI_AUTO_PARALLEL, gradients_mean=True,
                                     device_num=world, enable_parallel_optimizer=True,
                                     parallel_optimizer_config={"optimizer_weight_shard_size": shard_size})
    else:
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=world)
    logger.info("rank %d of %d, %s", rank, world, "optimizer parallel" if use_po else "data parallel")
    return ParallelState(rank, world, use_po)


def grad_reducer(params, state: ParallelState):
    """Mean of gradients across ranks (None when single-process or when the framework inserts it)."""
    if state.world <= 1 or state.optimizer_parallel:
        return None
    from mindspore import nn
    return nn.DistributedGradReducer(params, mean=True, degree=state.world)
