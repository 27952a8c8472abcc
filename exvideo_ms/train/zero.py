"""ZeRO stages 0, 1 and 2 (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models") over the data-parallel ranks of an ``msrun`` job, written with explicit collectives so that
one code path runs on CPU workers and on HCCL/NCCL.

Every trainable tensor is flattened, zero-padded to a multiple of the world size and cut into ``world``
equal slices; rank r owns slice r.

- stage 0: every rank holds the full AdamW moments; gradients are averaged with AllReduce;
- stage 1: the moments of a tensor are held only for the owned slice; gradients are averaged with
  AllReduce, each rank updates its slice of the weights and AllGather puts the full weights on every rank;
- stage 2: as stage 1, and the averaged gradient (and the accumulation buffer) is held only for the owned
  slice: ReduceScatter instead of AllReduce.

Weights stay whole on every rank (that is ZeRO-3's step, not taken), so in-training EMA, validation on rank 0
and checkpoints of the weights work as without sharding. Checkpoints always hold whole tensors: ``gather``
assembles the moments (a collective: every rank calls it), ``own_slice`` cuts a rank's part out of a whole
array, so a run resumes into any world size. Decisions that depend on the gradient (skip on overflow, the
clip norm) are reduced across ranks before they are taken.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from exvideo_ms import backend

STAGES = (0, 1, 2)


@dataclass(frozen=True)
class Layout:
    """Which part of every trainable tensor this rank owns."""

    stage: int = 0
    rank: int = 0
    world: int = 1

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"zero_stage must be one of {STAGES}, got {self.stage!r}")
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} outside a world of {self.world}")

    @property
    def sharded(self) -> bool:
        """Moments held in slices (stage ≥ 1 with more than one rank)."""
        return self.stage >= 1 and self.world > 1

    @property
    def scatters_gradients(self) -> bool:
        return self.stage == 2 and self.world > 1

    def slice_size(self, shape: Sequence[int]) -> int:
        return -(-int(np.prod(shape, dtype=np.int64)) // self.world)

    def held_shape(self, shape: Sequence[int]) -> Tuple[int, ...]:
        """Shape of this rank's AdamW moment for a trainable tensor of ``shape``."""
        return (self.slice_size(shape),) if self.sharded else tuple(shape)

    def own_slice(self, array: np.ndarray) -> np.ndarray:
        """This rank's slice of a whole array (for loading a checkpoint into a sharded run)."""
        if not self.sharded:
            return array
        size = self.slice_size(array.shape)
        flat = np.zeros(size * self.world, array.dtype)
        flat[:array.size] = array.reshape(-1)
        return flat[self.rank * size:(self.rank + 1) * size].copy()

    def whole(self, gathered: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        """The whole array from the concatenation of every rank's slice (AllGather's output)."""
        if not self.sharded:
            return gathered
        return gathered[:int(np.prod(shape, dtype=np.int64))].reshape(shape)


# ----------------------------------------------------------------------------------- graph functions
_mean_all = ops.MultitypeFuncGraph("zero_mean_all")
_scatter_mean = ops.MultitypeFuncGraph("zero_scatter_mean")
_element_sum = ops.MultitypeFuncGraph("zero_element_sum")
_square_sum = ops.MultitypeFuncGraph("zero_square_sum")


def _flat_padded(world, g):
    """``g`` flattened and zero-padded to a multiple of ``world`` elements."""
    n = g.size
    size = (n + world - 1) // world
    flat = g.reshape((-1,))
    if size * world != n:
        flat = ops.concat((flat, ops.zeros((size * world - n,), flat.dtype)))
    return flat


def own_slice(world, rank, g):
    """Rank ``rank``'s slice of ``g`` (in a graph; ``Layout.own_slice`` is the NumPy twin)."""
    return _flat_padded(world, g).reshape((world, -1))[rank]


@_mean_all.register("Function", "Number", "Tensor")
def _all_mean(allreduce, world, g):
    return allreduce(g) / world


@_scatter_mean.register("Function", "Number", "Number", "Bool", "Tensor")
def _reduce_scatter_mean(collective, world, rank, native, g):
    if native:
        return collective(_flat_padded(world, g)) / world
    return own_slice(world, rank, collective(g)) / world  # AllReduce, then this rank's slice


@_element_sum.register("Tensor")
def _sum_elements(g):
    return g.astype(ms.float32).sum()


@_square_sum.register("Tensor")
def _squares(g):
    g = g.astype(ms.float32)
    return (g * g).sum()


class GradientSync(nn.Cell):
    """The collectives of one train step for a ``Layout``: the mean gradient over ranks (whole, or this rank's
    slice at stage 2), the mean of a scalar, and global overflow and norm decisions. With one rank every
    method is the identity / the local value."""

    def __init__(self, layout: Layout, choices: backend.Choices = None):
        super().__init__()
        self.layout = layout  # read outside the graph only
        self.world, self.rank = layout.world, layout.rank
        self.distributed = layout.world > 1
        self.scatter = layout.scatters_gradients
        self.hyper_map = ops.HyperMap()
        if self.distributed:
            self.allreduce = ops.AllReduce()  # SUM: the only reduction CPU AllReduce has (measured on 2.8.0)
        if self.scatter:
            c = choices or backend.choices()
            # emulating an NPU's choices here: the double of ReduceScatter is the AllReduce form, same math
            self.native_scatter = bool(c.reduce_scatter) and not c.emulated
            # ReduceScatter's first dimension must be divisible by the rank count (ops/operations/comm_ops.py,
            # ReduceScatter docstring); _flat_padded guarantees it.
            self.reduce_scatter = ops.ReduceScatter() if self.native_scatter else self.allreduce

    def construct(self, grads):
        if not self.distributed:
            return grads
        if self.scatter:
            return self.hyper_map(ops.partial(_scatter_mean, self.reduce_scatter, self.world, self.rank,
                                              self.native_scatter), grads)
        return self.hyper_map(ops.partial(_mean_all, self.allreduce, self.world), grads)

    def mean(self, x):
        """The mean of a scalar over ranks."""
        if not self.distributed:
            return x
        return self.allreduce(x) / self.world

    def all_finite(self, grads):
        """True when no rank holds a non-finite gradient element (one flag for every rank).

        One reduction per gradient: the sum of all elements is inf or NaN when any element is, and it reads each
        gradient once without the boolean and float copies an element-wise test makes. The test is conservative:
        finite gradients whose sum passes float32's range count as an overflow too (the step is skipped and the
        loss scale lowered, as for any overflow)."""
        total = ops.stack(self.hyper_map(_element_sum, grads)).sum()
        if self.scatter:  # whole mean gradients (stages 0, 1) are the same on every rank already
            total = self.allreduce(total)
        return ops.isfinite(total)

    def norm(self, grads):
        """The global L2 norm of the whole mean gradient."""
        total = ops.stack(self.hyper_map(_square_sum, grads)).sum()
        if self.scatter:
            total = self.allreduce(total)
        return ops.sqrt(total)


class _AllGather(nn.Cell):
    def __init__(self):
        super().__init__()
        self.allgather = ops.AllGather()

    def construct(self, x):
        return self.allgather(x)


def gather(layout: Layout, tensors, shapes) -> list:
    """Whole NumPy arrays of ``shapes`` from each rank's slices ``tensors`` (a collective under sharding: every
    rank calls it). The slices travel as one concatenated vector: one AllGather, one compiled graph (a graph of
    one AllGather per tensor failed on CPU: "RingAllGather Memcpy error", measured with MindSpore 2.8.0)."""
    if not layout.sharded:
        return [t.asnumpy() for t in tensors]
    sizes = [layout.slice_size(s) for s in shapes]
    mine = np.concatenate([t.asnumpy().reshape(-1) for t in tensors])
    every = _AllGather()(ms.Tensor(mine)).asnumpy().reshape(layout.world, -1)
    out, offset = [], 0
    for size, shape in zip(sizes, shapes):
        out.append(layout.whole(every[:, offset:offset + size].reshape(-1), shape))
        offset += size
    return out
