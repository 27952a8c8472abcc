"""AdamW with PyTorch's semantics (decoupled decay, bias-corrected moments), the optimizer ExVideo used,
through MindSpore's fused ``AdamWeightDecay`` kernel (which has no bias correction of its own: it is folded
into the kernel's arguments, see ``AdamW``); moments are float32 like the trainable weights. Under ZeRO
stage 1 or 2 (``train/zero.py``) each rank holds the moments of its slice only and writes the same update
with element-wise ops on that slice, then gathers the whole weights."""
from dataclasses import dataclass
from typing import Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from exvideo_ms.train import zero


@dataclass
class OptimizerOptions:
    """AdamW (``--train.optimizer.*``; defaults: torch.optim.AdamW as ExVideo ran it, lr 1e-5)."""

    lr: float = 1.0e-5
    """learning rate (> 0)"""
    betas: Tuple[float, float] = (0.9, 0.999)
    """AdamW's moment decays (each in [0, 1))"""
    eps: float = 1.0e-8
    """AdamW's epsilon (> 0)"""
    weight_decay: float = 0.01
    """decoupled weight decay (>= 0)"""
    warmup_steps: int = 0
    """linear warm-up steps (>= 0)"""
    grad_clip: float = 0.0
    """global-norm gradient clipping (0: off, as ExVideo)"""
    grad_accum: int = 1
    """micro-steps per optimizer step (>= 1)"""


def learning_rate(step: int, opts: OptimizerOptions) -> float:
    """Constant after a linear warm-up (ExVideo: constant, no warm-up)."""
    if opts.warmup_steps > 0 and step < opts.warmup_steps:
        return opts.lr * (step + 1) / opts.warmup_steps
    return opts.lr


_adamw = ops.MultitypeFuncGraph("adamw")


@_adamw.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                 "Tensor", "Tensor")
def _adamw_update(kernel, lr, beta1, beta2, eps, decay, grad_scale, param, m, v, grad):
    return kernel(param, m, v, lr, beta1, beta2, eps, decay, grad.astype(ms.float32) * grad_scale)


_adamw_slice = ops.MultitypeFuncGraph("adamw_slice")


@_adamw_slice.register("Function", "Number", "Number", "Number", *["Tensor"] * 10)
def _adamw_slice_update(allgather, world, rank, scattered, lr, beta1, beta2, eps, decay, grad_scale, param, m, v,
                        grad):
    """The fused kernel's update (same folded arguments) on this rank's slice, then the whole weight gathered."""
    g = grad.astype(ms.float32) * grad_scale
    if scattered == 0:
        g = zero.own_slice(world, rank, g)
    p = zero.own_slice(world, rank, param)
    m_new = beta1 * m + (1.0 - beta1) * g
    v_new = beta2 * v + (1.0 - beta2) * g * g
    p_new = p - lr * (m_new / (ops.sqrt(v_new) + eps) + decay * p)
    whole = allgather(p_new)[:param.size].reshape(param.shape)
    ops.assign(m, m_new)
    ops.assign(v, v_new)
    return ops.assign(param, whole)


class AdamW(nn.Cell):
    """p ← p·(1 − lr·wd); m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
    p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε).

    Each parameter is updated in place by MindSpore's fused ``AdamWeightDecay`` kernel, which has no bias
    correction: with c1 = 1−β1ᵗ and c2 = √(1−β2ᵗ) it is given lr·c2/c1, ε·c2 and weight decay wd·c1/c2, which is
    the update above exactly (element-wise ops kept every parameter's temporaries alive at once: docs/benchmarks.md).

    Per-parameter work goes through ``ops.HyperMap``: a Python loop over hundreds of parameters costs
    minutes of graph compilation in MindSpore 2.8 (measured: 32 s for 363 element-wise ops), HyperMap < 1 s.
    """

    def __init__(self, params, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
                 layout: zero.Layout = zero.Layout()):
        super().__init__()
        self.parameters = ms.ParameterTuple(params)
        self.layout = layout
        # plain values for the graph (a dataclass attribute is not resolved inside construct)
        self.sharded, self.world, self.rank = layout.sharded, layout.world, layout.rank
        self.scattered = int(layout.scatters_gradients)
        if layout.sharded:
            self.exp_avg, self.exp_avg_sq = (ms.ParameterTuple(
                Parameter(Tensor(np.zeros(layout.held_shape(p.shape), np.float32)), name=f"{prefix}.{p.name}",
                          requires_grad=False) for p in self.parameters) for prefix in ("exp_avg", "exp_avg_sq"))
            self.allgather = ops.AllGather()
        else:
            self.exp_avg = self.parameters.clone(prefix="exp_avg", init="zeros")
            self.exp_avg_sq = self.parameters.clone(prefix="exp_avg_sq", init="zeros")
        self.step_count = Parameter(Tensor(0.0, ms.float32), name="adamw_step", requires_grad=False)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.kernel = ops.AdamWeightDecay()
        self.hyper_map = ops.HyperMap()

    def construct(self, grads, lr, grad_scale):
        """``grads`` are multiplied by ``grad_scale`` (1/loss scale) before use; under sharding they are whole
        (stage 1) or this rank's slices (stage 2)."""
        step = self.step_count + 1.0
        ops.assign(self.step_count, step)
        beta1, beta2 = Tensor(self.beta1, ms.float32), Tensor(self.beta2, ms.float32)
        c1 = 1.0 - ops.pow(beta1, step)
        c2 = ops.sqrt(1.0 - ops.pow(beta2, step))
        lr_c, eps_c, decay_c = lr * c2 / c1, self.eps * c2, self.weight_decay * c1 / c2
        if self.sharded:
            update = ops.partial(_adamw_slice, self.allgather, self.world, self.rank, self.scattered, lr_c, beta1, beta2, eps_c, decay_c, grad_scale)
        else:
            update = ops.partial(_adamw, self.kernel, lr_c, beta1, beta2, eps_c, decay_c, grad_scale)
        return self.hyper_map(update, self.parameters, self.exp_avg, self.exp_avg_sq, grads)

    def state_bytes(self) -> int:
        """Bytes of optimizer state this rank holds (both moments)."""
        return sum(int(np.prod(p.shape, dtype=np.int64)) * 4 for p in (*self.exp_avg, *self.exp_avg_sq))

    def state_dict(self, names) -> dict:
        """Both moments (``exp_avg.unet.<name>``, ``exp_avg_sq.unet.<name>``, by the parameters' ``names``) and
        the step count (``adamw_step``); whole tensors under sharding too (gathered: every rank calls this)."""
        shapes = [p.shape for p in self.parameters]
        out = {}
        for prefix, group in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            out.update({f"{prefix}.unet.{n}": a for n, a in zip(names, zero.gather(self.layout, group, shapes))})
        out["adamw_step"] = self.step_count.asnumpy()
        return out

    def state_shapes(self, names) -> dict:
        shapes = {f"{prefix}.unet.{n}": tuple(p.shape) for prefix in ("exp_avg", "exp_avg_sq")
                  for n, p in zip(names, self.parameters)}
        return {**shapes, "adamw_step": ()}

    def load_state_dict(self, state: dict, names) -> None:
        for prefix, group in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            for n, p in zip(names, group):
                p.set_data(Tensor(self.layout.own_slice(np.asarray(state[f"{prefix}.unet.{n}"], np.float32))))
        self.step_count.set_data(Tensor(np.asarray(state["adamw_step"], np.float32).reshape(())))
