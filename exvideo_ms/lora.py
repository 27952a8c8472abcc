"""LoRA (Hu et al. 2021, arXiv 2106.09685): a low-rank update ΔW = s · (α / r) · B·A of a UNet weight W, with
A (r, in) the "down" and B (out, r) the "up" matrix, rank r, alpha α and a user scale s.

Files are read in the two namings the ecosystem writes for a UNet:

* PEFT / diffusers: ``<module>.lora_A.weight`` and ``<module>.lora_B.weight``, with ``<module>`` a diffusers
  ``UNetSpatioTemporalConditionModel`` path (``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``),
  optionally under ``unet.`` or ``base_model.model.``. Alpha and rank come from the safetensors metadata that
  diffusers' ``save_lora_adapter`` writes (``lora_adapter_metadata``: PEFT's LoraConfig as JSON), else from a
  PEFT ``adapter_config.json`` beside the file, else α = r (diffusers' rule for files without alphas).
* kohya: ``lora_unet_<module with dots as underscores>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``;
  accepted because, for this UNet, every module's underscored name is unique (checked).

Our cells keep the original Stability names, so a diffusers module path is mapped to our parameter through the
checkpoint converter's table (``convert/diffusers.py``). ``merge`` adds the updates into the weights (no cost at
inference), ``unmerge`` subtracts the same float32 updates: the weights come back within float32 rounding of
the originals (one addition and one subtraction per element), not bit-exactly.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
PEFT_CONFIG_FILE = "adapter_config.json"  # peft.utils.constants.CONFIG_NAME
KOHYA_PREFIX = "lora_unet_"
_PREFIXES = ("base_model.model.", "unet.")  # PEFT model wrapper, diffusers pipeline component
# LoraConfig options that change the update's form: refused rather than applied wrongly
_UNSUPPORTED = ("use_dora", "lora_bias", "fan_in_fan_out")


class LoRAError(ValueError):
    """A LoRA file that cannot be read or does not fit the model."""


@dataclass(frozen=True)
class Update:
    """One layer's low-rank update: ``down`` A (r, in, ...), ``up`` B (out, r, ...), ``alpha``; ``rslora``
    scales by α/√r instead of α/r (PEFT's use_rslora)."""
    down: np.ndarray
    up: np.ndarray
    alpha: float
    rslora: bool = False

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def delta(self, shape: Tuple[int, ...], scale: float = 1.0) -> np.ndarray:
        """s · (α / r) · B·A in float32, shaped as the weight (``shape``)."""
        factor = scale * self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)
        up = self.up.reshape(self.up.shape[0], self.rank).astype(np.float32)
        down = self.down.reshape(self.rank, -1).astype(np.float32)
        return (np.float32(factor) * (up @ down)).reshape(shape)


@dataclass(frozen=True)
class LoRAFile:
    """A LoRA file's updates by diffusers module path, and the naming it was written in."""
    path: str
    naming: str  # "peft" or "kohya"
    updates: Dict[str, Update]


# ------------------------------------------------------------------------------------------------- reading
def _metadata_config(path: Path, metadata: Mapping[str, str]) -> dict:
    raw = metadata.get(METADATA_KEY)
    if raw:
        cfg = json.loads(raw)
        # saved through a pipeline, the keys carry the component's prefix ("unet.r")
        return {k[len("unet."):] if k.startswith("unet.") else k: v for k, v in cfg.items()}
    beside = path.parent / PEFT_CONFIG_FILE
    return json.loads(beside.read_text()) if beside.is_file() else {}


def _pattern_value(patterns: Mapping[str, float], module: str) -> Optional[float]:
    """PEFT's rank_pattern / alpha_pattern: a key matches a module path ending with it (regex)."""
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?{key}", module):
            return value
    return None


def read(path) -> LoRAFile:
    """Read a LoRA safetensors file (see the module docstring for the namings)."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise LoRAError(f"{path}: no such LoRA file")
    if path.suffix != ".safetensors":
        raise LoRAError(f"{path}: LoRA files are read as .safetensors only (no pickles)")
    try:
        with safe_open(str(path), "np") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types on a damaged file
        raise LoRAError(f"{path}: not a readable safetensors file ({e})") from e
    if any(k.startswith(KOHYA_PREFIX) for k in tensors):
        return LoRAFile(str(path), "kohya", _kohya_updates(path, tensors))
    return LoRAFile(str(path), "peft", _peft_updates(path, tensors, _metadata_config(path, metadata)))


def _peft_updates(path: Path, tensors: Mapping[str, np.ndarray], config: dict) -> Dict[str, Update]:
    bad = [k for k in _UNSUPPORTED if config.get(k)]
    if bad:
        raise LoRAError(f"{path}: LoRA options {bad} are not supported (plain LoRA only)")
    pairs: Dict[str, Dict[str, np.ndarray]] = {}
    alphas: Dict[str, float] = {}
    for key, value in tensors.items():
        name = key
        for prefix in _PREFIXES:
            name = name[len(prefix):] if name.startswith(prefix) else name
        m = re.fullmatch(r"(.+)\.lora_([AB])\.weight", name)
        if m:
            pairs.setdefault(m.group(1), {})[m.group(2)] = value
        elif name.endswith(".alpha"):
            alphas[name[:-len(".alpha")]] = float(np.asarray(value).reshape(()))
        else:
            raise LoRAError(f"{path}: tensor {key!r} is neither <module>.lora_A.weight, <module>.lora_B.weight nor "
                            f"<module>.alpha (PEFT naming) nor {KOHYA_PREFIX}* (kohya naming)")
    if not pairs:
        raise LoRAError(f"{path}: no LoRA tensors")
    updates = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise LoRAError(f"{path}: module {module!r} has lora_{''.join(ab)} only, expected lora_A and lora_B")
        alpha = alphas.get(module)  # an explicit tensor, else PEFT's alpha_pattern, else its lora_alpha
        if alpha is None:
            alpha = _pattern_value(config.get("alpha_pattern") or {}, module)
        if alpha is None:
            alpha = config.get("lora_alpha", ab["A"].shape[0])  # without any: alpha = rank, as diffusers
        updates[module] = Update(ab["A"], ab["B"], float(alpha), bool(config.get("use_rslora", False)))
    if not config and not alphas:
        logger.info("%s: no alpha in the file, its metadata or an adapter_config.json: alpha = rank (scale 1)", path)
    return updates


def _kohya_updates(path: Path, tensors: Mapping[str, np.ndarray]) -> Dict[str, Update]:
    parts: Dict[str, Dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = re.fullmatch(rf"{KOHYA_PREFIX}(\w+?)\.(lora_down\.weight|lora_up\.weight|alpha)", key)
        if m is None:
            raise LoRAError(f"{path}: tensor {key!r} is not {KOHYA_PREFIX}<module>.lora_down.weight / .lora_up.weight "
                            f"/ .alpha (kohya naming); text-encoder LoRAs do not apply to SVD")
        parts.setdefault(m.group(1), {})[m.group(2)] = value
    updates = {}
    for module, p in parts.items():
        if "lora_down.weight" not in p or "lora_up.weight" not in p:
            raise LoRAError(f"{path}: {KOHYA_PREFIX}{module} lacks lora_down or lora_up")
        down = p["lora_down.weight"]
        alpha = float(np.asarray(p["alpha"]).reshape(())) if "alpha" in p else float(down.shape[0])
        updates[KOHYA_PREFIX + module] = Update(down, p["lora_up.weight"], alpha)
    return updates


# ------------------------------------------------------------------------------------------------- mapping
def module_names(cfg, unet_parameter_names: Sequence[str]) -> Dict[str, str]:
    """{diffusers module path: our weight's parameter name (``unet.input_blocks...``)} for every weight the
    diffusers UNet has under the same shape (the converter's identity entries); other names are skipped."""
    from exvideo_ms.convert.diffusers import IDENTITY, table
    names = [n for n in unet_parameter_names if n.endswith(".weight") and n.startswith("unet.")]
    if not names:
        raise ValueError(f"expected the UNet's parameter names (unet.*), got e.g. {list(unet_parameter_names)[:2]}")
    out = {}
    for ours, found in table(cfg, names).items():
        if found is not None and found[1] == IDENTITY and len(found[0]) == 1:
            out[found[0][0][len("unet."):-len(".weight")]] = ours
    return out


def resolve(lora: LoRAFile, cfg, shapes: Mapping[str, Tuple[int, ...]]) -> Dict[str, Update]:
    """The file's updates by our UNet weight name, for a model whose UNet parameters have ``shapes``
    ({``unet.*`` name: shape}: ``unet_shapes(model.unet)``, or a checkpoint's index), each checked against the
    weight's shape; every module the model does not have is named in one error."""
    shapes = {n: tuple(v) for n, v in shapes.items() if n.startswith("unet.")}
    by_module = module_names(cfg, list(shapes))
    if lora.naming == "kohya":
        kohya = {}
        for module, ours in by_module.items():
            key = KOHYA_PREFIX + module.replace(".", "_")
            if key in kohya:
                raise LoRAError(f"{lora.path}: kohya name {key} is ambiguous ({kohya[key]}, {ours})")
            kohya[key] = ours
        by_module = kohya
    unknown = sorted(m for m in lora.updates if m not in by_module)
    if unknown:
        raise LoRAError(f"{lora.path}: {len(unknown)} LoRA module(s) the model does not have (diffusers naming "
                        f"expected): {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")
    out = {}
    for module, update in lora.updates.items():
        name = by_module[module]
        shape = shapes[name]
        out_dim, in_size = shape[0], int(np.prod(shape[1:]))
        if (update.up.shape[0], int(np.prod(update.down.shape[1:]))) != (out_dim, in_size) \
                or int(np.prod(update.up.shape[1:])) != update.rank:
            raise LoRAError(f"{lora.path}: {module}: lora_A {tuple(update.down.shape)} and lora_B "
                            f"{tuple(update.up.shape)} do not fit the weight {name} {shape}")
        out[name] = update
    return out


def unet_shapes(unet) -> Dict[str, Tuple[int, ...]]:
    return {p.name: tuple(p.shape) for p in unet.get_parameters()}


# ------------------------------------------------------------------------------------------------- merging
def _add(unet, updates: Mapping[str, Update], scale: float) -> None:
    """``merge_arrays`` on a network's parameters."""
    from mindspore import Tensor
    params = {p.name: p for p in unet.get_parameters()}
    weights = {name: params[name].asnumpy() for name in updates}
    merge_arrays(weights, updates, scale)
    for name, w in weights.items():
        params[name].set_data(Tensor(w))


def merge(unet, updates: Mapping[str, Update], scale: float = 1.0) -> None:
    """W += scale · (α / r) · B·A for every update (computed in float32, stored in the weight's dtype)."""
    _add(unet, updates, scale)


def unmerge(unet, updates: Mapping[str, Update], scale: float = 1.0) -> None:
    """Undo ``merge`` with the same updates and scale (within float32 rounding for float32 weights)."""
    _add(unet, updates, -scale)  # the same float32 update with its sign flipped (exact)


# ------------------------------------------------------------------------------------------------- making
TARGETS = r"attn[12]\.(to_q|to_k|to_v|to_out\.0)$"  # SVD_Xtend's LoRA layers: every attention's projections


def extract(base: Mapping[str, np.ndarray], tuned: Mapping[str, np.ndarray], cfg, rank: int,
            targets: str = TARGETS) -> Tuple[Dict[str, Update], Dict[str, float], list]:
    """A LoRA approximating ``tuned`` − ``base`` (two checkpoints' tensors by our names): for every UNet weight
    whose diffusers module path matches ``targets`` (a regular expression, searched) and differs, the truncated
    SVD of the difference, rank ``rank`` (less where the weight is smaller), alpha = rank (scale 1).

    Returns ({diffusers module path: Update}, {module: relative Frobenius error of the approximation}, the
    names of tensors that differ but are not in the LoRA: other layers, biases, norms, ExVideo's position
    table; a LoRA cannot carry them)."""
    if rank < 1:
        raise LoRAError(f"rank must be >= 1, got {rank}")
    missing = sorted(set(base) ^ set(tuned))
    if missing:
        raise LoRAError(f"the two checkpoints hold different tensors: {', '.join(missing[:10])}")
    pattern = re.compile(targets)
    by_ours = {ours: module for module, ours in module_names(cfg, list(base)).items()}
    updates, errors, left_out = {}, {}, []
    for name in sorted(base):
        a, b = np.asarray(base[name]), np.asarray(tuned[name])
        if a.shape != b.shape:
            raise LoRAError(f"{name}: shape {a.shape} in the base checkpoint, {b.shape} in the tuned one")
        if np.array_equal(a, b):
            continue
        module = by_ours.get(name)
        if module is None or a.ndim < 2 or not pattern.search(module):
            left_out.append(name)
            continue
        diff = (b.astype(np.float64) - a.astype(np.float64)).reshape(a.shape[0], -1)
        u, sv, vt = np.linalg.svd(diff, full_matrices=False)
        r = min(rank, len(sv))
        root = np.sqrt(sv[:r])
        up = (u[:, :r] * root).reshape((a.shape[0], r) + (1,) * (a.ndim - 2)).astype(np.float32)
        down = (root[:, None] * vt[:r]).reshape((r,) + a.shape[1:]).astype(np.float32)
        updates[module] = Update(down, up, float(r))
        norm = float(np.linalg.norm(diff))
        errors[module] = float(np.sqrt(max(norm ** 2 - float(np.sum(sv[:r] ** 2)), 0.0))) / norm
    if not updates:
        raise LoRAError(f"no weight matching {targets!r} differs between the checkpoints")
    return updates, errors, left_out


def write(path, updates: Mapping[str, Update]) -> None:
    """``updates`` ({diffusers module path: Update}) as a safetensors file in PEFT naming
    (``<module>.lora_A.weight`` / ``.lora_B.weight``) with PEFT's LoraConfig in diffusers'
    ``lora_adapter_metadata``, as ``save_lora_adapter`` writes it; refuses to replace an existing file."""
    from collections import Counter

    from safetensors.numpy import save_file
    path = Path(path)
    if path.exists():
        raise LoRAError(f"{path} exists: not overwritten (choose another --output or remove it)")
    rank = Counter(u.rank for u in updates.values()).most_common(1)[0][0]
    alpha = Counter(u.alpha for u in updates.values()).most_common(1)[0][0]
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": sorted(updates),
              "rank_pattern": {m: u.rank for m, u in updates.items() if u.rank != rank},
              "alpha_pattern": {m: u.alpha for m, u in updates.items() if u.alpha != alpha},
              "use_rslora": False, "lora_dropout": 0.0, "bias": "none", "init_lora_weights": True}
    tensors = {}
    for module, u in updates.items():
        tensors[f"{module}.lora_A.weight"] = np.ascontiguousarray(u.down, np.float32)
        tensors[f"{module}.lora_B.weight"] = np.ascontiguousarray(u.up, np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", METADATA_KEY: json.dumps(config, sort_keys=True)})
    tmp.replace(path)


def merge_arrays(weights: Dict[str, np.ndarray], updates: Mapping[str, Update], scale: float = 1.0) -> None:
    """``merge`` on a checkpoint's arrays (by our names), in place, each kept in its dtype."""
    for name, update in updates.items():
        w = weights[name]
        weights[name] = (w.astype(np.float32) + update.delta(w.shape, scale)).astype(w.dtype)


# ------------------------------------------------------------------------------------------------- training
# layer kinds a trained LoRA can target, as regular expressions on diffusers module paths
KINDS = {
    "spatial_attention": r"\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$",
    "temporal_attention": r"\.temporal_transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$",
    "feed_forward": r"transformer_blocks\.\d+\.(ff|ff_in)\.net\.(0\.proj|2)$",
    # ExVideo's blocks: every Linear of the temporal transformers and of their frame-position embedding (the
    # position table and the 3-D conv train in exvideo mode, not through a LoRA)
    "exvideo": r"(\.temporal_transformer_blocks\.\d+\..+|\.time_pos_embed\.linear_[12])$",
}


def kinds_pattern(kinds: Sequence[str]) -> str:
    """One regular expression for the layer ``kinds`` (keys of KINDS)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise LoRAError(f"LoRA targets must be among {sorted(KINDS)}, got {list(kinds)}")
    return "|".join(f"({KINDS[k]})" for k in kinds)


def add_lora(unet, cfg, rank: int, alpha: float, targets: str, dropout: float = 0.0) -> Dict[str, str]:
    """Give every Linear layer of ``unet`` whose diffusers module path matches ``targets`` a trainable LoRA
    branch (nn/layers.Linear): ``lora_A`` initialised as PEFT does (Kaiming-uniform, a = √5: MindSpore's
    Dense default), ``lora_B`` zeros, so training starts from the unchanged network; scale α / r; dropout on the
    branch's input. The new parameters are named ``<our weight's module>.lora_A.weight`` / ``.lora_B.weight``.
    Returns {our LoRA parameter name: diffusers name (``<module>.lora_A.weight``)} for export."""
    from mindspore import nn

    from exvideo_ms.nn.layers import Identity, Linear
    if rank < 1:
        raise LoRAError(f"LoRA rank must be >= 1, got {rank}")
    pattern = re.compile(targets)
    cells = dict(unet.cells_and_names())
    names = {}
    for module, ours in sorted(module_names(cfg, list(unet_shapes(unet))).items()):
        if not pattern.search(module):
            continue
        path = ours[len("unet."):-len(".weight")]
        cell = cells.get(path)
        if not isinstance(cell, Linear):
            continue  # convolutions and embeddings keep no LoRA here (the kinds name Linear layers only)
        out_dim, in_dim = cell.weight.shape
        cell.lora_A = Linear(in_dim, rank, has_bias=False)
        cell.lora_B = Linear(rank, out_dim, has_bias=False, weight_init="zeros")
        cell.lora_dropout = nn.Dropout(p=dropout) if dropout > 0 else Identity()
        cell.lora_scale = float(alpha) / rank
        for part in ("A", "B"):
            p = getattr(cell, f"lora_{part}").weight
            p.name = f"{ours[:-len('.weight')]}.lora_{part}.weight"
            names[p.name] = f"{module}.lora_{part}.weight"
    if not names:
        raise LoRAError(f"no Linear layer of the UNet matches the LoRA targets {targets!r}")
    return names


def updates_from_weights(weights: Mapping[str, np.ndarray], names: Mapping[str, str], alpha: float) -> Dict[str, Update]:
    """{diffusers module: Update} from trained LoRA weights by our names (``add_lora``'s mapping)."""
    pairs: Dict[str, Dict[str, np.ndarray]] = {}
    for ours, theirs in names.items():
        module, _, part = theirs[:-len(".weight")].rpartition(".lora_")
        pairs.setdefault(module, {})[part] = np.asarray(weights[ours], np.float32)
    return {m: Update(p["A"], p["B"], float(alpha)) for m, p in pairs.items()}
