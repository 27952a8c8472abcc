"""The compiled train step: gradients of the weighted loss w.r.t. the trainable parameters with a dynamic
loss scale, mean across data-parallel ranks (whole or, at ZeRO stage 2, this rank's slices: ``train/zero.py``),
overflow check (a non-finite gradient on any rank skips the update on every rank and lowers the scale),
optional global-norm clipping (the norm of the whole mean gradient), gradient accumulation, AdamW."""
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from exvideo_ms.train.zero import GradientSync, Layout


@dataclass
class LossScaleOptions:
    """Dynamic loss scaling (``--train.loss_scale.*``; needed when frozen layers run in fp16)."""

    enable: bool = True
    """scale the loss, skip steps with non-finite gradients and lower the scale"""
    init: float = 65536.0
    """initial scale (> 0)"""
    factor: float = 2.0
    """growth and back-off factor (> 1)"""
    window: int = 1000
    """finite steps before the scale grows (>= 1)"""
    minimum: float = 1.0
    """the scale never falls below this (> 0)"""


class _ScaledLoss(nn.Cell):
    """(weighted loss × scale, plain loss): differentiating the first output gives scaled gradients."""

    def __init__(self, loss: nn.Cell):
        super().__init__(auto_prefix=False)
        self.loss = loss

    def construct(self, scale, *inputs):
        weighted, plain = self.loss(*inputs)
        return weighted * scale, (weighted, plain)


_scaled = ops.MultitypeFuncGraph("scaled")
_accumulate = ops.MultitypeFuncGraph("accumulate")
_zero = ops.MultitypeFuncGraph("zero")


@_scaled.register("Tensor", "Tensor")
def _times(scale, g):
    return g.astype(ms.float32) * scale


@_accumulate.register("Number", "Tensor", "Tensor")
def _add(weight, acc, g):
    return ops.assign(acc, acc + g.astype(ms.float32) * weight)


@_zero.register("Tensor")
def _zeros(acc):
    return ops.assign(acc, ops.zeros_like(acc))


class TrainStep(nn.Cell):
    """Per-parameter work uses ``ops.HyperMap`` (Python loops over hundreds of parameters compile for minutes)."""

    def __init__(self, loss: nn.Cell, optimizer, scale: LossScaleOptions, grad_clip: float = 0.0,
                 grad_accum: int = 1, sync: GradientSync = None):
        super().__init__(auto_prefix=False)
        self.scaled = _ScaledLoss(loss)
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.value_and_grad = ops.value_and_grad(self.scaled, grad_position=None, weights=self.weights, has_aux=True)
        self.hyper_map = ops.HyperMap()
        self.scale_opts = scale
        self.loss_scale = Parameter(Tensor(scale.init if scale.enable else 1.0, ms.float32), name="loss_scale",
                                    requires_grad=False)
        self.good_steps = Parameter(Tensor(0, ms.int32), name="loss_scale_good_steps", requires_grad=False)
        self.grad_clip = float(grad_clip)
        self.accum = int(grad_accum)
        self.sync = sync if sync is not None else GradientSync(Layout())
        if self.accum > 1:  # held like the reduced gradient: whole, or this rank's slice at ZeRO stage 2
            layout = self.sync.layout
            shape = layout.held_shape if layout.scatters_gradients else tuple
            self.accum_grads = ms.ParameterTuple(
                Parameter(Tensor(np.zeros(shape(w.shape), np.float32)), name=f"accum.{w.name}", requires_grad=False)
                for w in self.weights)
        self.dynamic = bool(scale.enable)

    def construct(self, lr, apply: bool, *inputs):
        """One micro-step of ``loss(*inputs)`` -> (weighted, plain); the update (and loss-scale bookkeeping)
        happens when ``apply`` (a graph constant)."""
        scale = self.loss_scale * 1.0
        (_, (weighted, plain)), grads = self.value_and_grad(scale, *inputs)
        grads = self.sync(grads)
        weighted, plain = self.sync.mean(weighted), self.sync.mean(plain)
        inv_scale = 1.0 / scale
        if self.accum > 1:
            self.hyper_map(ops.partial(_accumulate, 1.0 / self.accum), self.accum_grads, grads)
            if not apply:
                return weighted, plain, ops.isfinite(weighted), scale
            grads = self.accum_grads
        finite = ops.logical_and(ops.isfinite(weighted), self.sync.all_finite(grads))
        if self.grad_clip > 0:  # as ops.clip_by_global_norm: g · clip / max(‖g‖, clip)
            grads = self.hyper_map(ops.partial(_scaled, inv_scale), grads)
            norm = self.sync.norm(grads)
            inv_scale = self.grad_clip / ops.maximum(norm, self.grad_clip)
        if finite:
            self.optimizer(grads, lr, inv_scale)
        if self.accum > 1:
            self.hyper_map(_zero, self.accum_grads)
        if self.dynamic:
            self._update_scale(finite)
        return weighted, plain, finite, scale

    def _update_scale(self, finite):
        o = self.scale_opts
        good = ops.select(finite, self.good_steps + 1, ops.zeros_like(self.good_steps))
        grow = good >= o.window
        new_scale = ops.select(finite, ops.select(grow, self.loss_scale * o.factor, self.loss_scale),
                               ops.maximum(self.loss_scale / o.factor, ops.fill(ms.float32, (), o.minimum)))
        ops.assign(self.loss_scale, new_scale)
        ops.assign(self.good_steps, ops.select(grow, ops.zeros_like(good), good))

    def state_dict(self) -> dict:
        """The dynamic loss scale and its count of finite steps."""
        return {"loss_scale": self.loss_scale.asnumpy(),
                "loss_scale_good_steps": self.good_steps.asnumpy().astype(np.int64)}

    def state_shapes(self) -> dict:
        return {"loss_scale": (), "loss_scale_good_steps": ()}

    def load_state_dict(self, state: dict) -> None:
        self.loss_scale.set_data(Tensor(np.asarray(state["loss_scale"], np.float32).reshape(())))
        self.good_steps.set_data(Tensor(np.asarray(state["loss_scale_good_steps"]).astype(np.int32).reshape(())))
