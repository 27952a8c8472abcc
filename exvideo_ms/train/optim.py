"""AdamW with PyTorch's semantics (decoupled decay, bias-corrected moments), the optimizer ExVideo used,
through MindSpore's fused ``AdamWeightDecay`` kernel (which has no bias correction of its own: it is folded
into the kernel's arguments, see ``AdamW``); moments are float32 like the trainable weights."""
from dataclasses import dataclass
from typing import Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops


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


class AdamW(nn.Cell):
    """p ← p·(1 − lr·wd); m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
    p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε).

    Each parameter is updated in place by MindSpore's fused ``AdamWeightDecay`` kernel, which has no bias
    correction: with c1 = 1−β1ᵗ and c2 = √(1−β2ᵗ) it is given lr·c2/c1, ε·c2 and weight decay wd·c1/c2, which is
    the update above exactly (element-wise ops kept every parameter's temporaries alive at once: docs/benchmarks.md).

    Per-parameter work goes through ``ops.HyperMap``: a Python loop over hundreds of parameters costs
    minutes of graph compilation in MindSpore 2.8 (measured: 32 s for 363 element-wise ops), HyperMap < 1 s.
    """

    def __init__(self, params, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__()
        self.parameters = ms.ParameterTuple(params)
        self.exp_avg = self.parameters.clone(prefix="exp_avg", init="zeros")
        self.exp_avg_sq = self.parameters.clone(prefix="exp_avg_sq", init="zeros")
        self.step_count = Parameter(Tensor(0.0, ms.float32), name="adamw_step", requires_grad=False)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.kernel = ops.AdamWeightDecay()
        self.hyper_map = ops.HyperMap()

    def construct(self, grads, lr, grad_scale):
        """``grads`` are multiplied by ``grad_scale`` (1/loss scale) before use."""
        step = self.step_count + 1.0
        ops.assign(self.step_count, step)
        beta1, beta2 = Tensor(self.beta1, ms.float32), Tensor(self.beta2, ms.float32)
        c1 = 1.0 - ops.pow(beta1, step)
        c2 = ops.sqrt(1.0 - ops.pow(beta2, step))
        update = ops.partial(_adamw, self.kernel, lr * c2 / c1, beta1, beta2, self.eps * c2,
                             self.weight_decay * c1 / c2, grad_scale)
        return self.hyper_map(update, self.parameters, self.exp_avg, self.exp_avg_sq, grads)

    def state_dict(self, names) -> dict:
        """Both moments (``exp_avg.unet.<name>``, ``exp_avg_sq.unet.<name>``, by the parameters' ``names``) and
        the step count (``adamw_step``)."""
        out = {}
        for prefix, group in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            out.update({f"{prefix}.unet.{n}": p.asnumpy() for n, p in zip(names, group)})
        out["adamw_step"] = self.step_count.asnumpy()
        return out

    def state_shapes(self, names) -> dict:
        shapes = {f"{prefix}.unet.{n}": tuple(p.shape) for prefix in ("exp_avg", "exp_avg_sq")
                  for n, p in zip(names, self.parameters)}
        return {**shapes, "adamw_step": ()}

    def load_state_dict(self, state: dict, names) -> None:
        for prefix, group in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            for n, p in zip(names, group):
                p.set_data(Tensor(state[f"{prefix}.unet.{n}"]))
        self.step_count.set_data(Tensor(np.asarray(state["adamw_step"], np.float32).reshape(())))
