"""PyTorch weights -> one MindSpore checkpoint for our networks.

``make_plan`` decides, before anything is written, where every network parameter comes from: one entry per
parameter (source file, key(s), transform), checked against the network built from the config without
allocating it. Every source key must be used, knowingly unused, or replaced by a patch; every parameter must
be filled exactly once with the right shape. Any violation is a ``ConversionError`` naming the keys.
``write_plan`` then streams one tensor at a time into the output (atomic temporary name + rename).
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from exvideo_ms.checkpoint import CheckpointWriter, cast, dtype_key, network_shapes
from exvideo_ms.config import SVDConfig, load_config, save_config
from exvideo_ms.convert import diffsynth, diffusers, sgm
from exvideo_ms.convert.sources import DiffusersFolder, Source, open_source

logger = logging.getLogger(__name__)

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class ConversionError(ValueError):
    """The sources cannot be turned into a checkpoint of the configured networks."""


@dataclass
class Entry:
    name: str
    shape: tuple
    source: Source
    keys: Tuple[str, ...]
    transform: str


@dataclass
class Plan:
    config: SVDConfig
    entries: List[Entry]
    layouts: Dict[str, str]  # source path -> layout name
    unused: Dict[str, List[str]] = field(default_factory=dict)  # source path -> knowingly unused keys
    replaced: Dict[str, List[str]] = field(default_factory=dict)  # base keys a patch replaces

    def summary(self) -> str:
        comps = Counter(e.name.split(".")[0] for e in self.entries)
        transforms = Counter(e.transform for e in self.entries if e.transform)
        per_source = Counter(str(e.source.path) for e in self.entries)
        lines = [f"{len(self.entries)} parameters filled: " + ", ".join(f"{c} {n}" for c, n in comps.items())]
        for path, layout in self.layouts.items():
            extra = []
            if self.unused.get(path):
                extra.append(f"{len(self.unused[path])} knowingly unused")
            if self.replaced.get(path):
                extra.append(f"{len(self.replaced[path])} replaced by the patch")
            lines.append(f"  {path} [{layout}]: {per_source.get(path, 0)} tensors mapped"
                         + (f", {', '.join(extra)}" if extra else ""))
        if transforms:
            lines.append("  transforms: " + ", ".join(f"{t} x{n}" for t, n in transforms.items()))
        return "\n".join(lines)


def detect_layout(src: Source) -> str:
    if isinstance(src, DiffusersFolder):
        return "diffusers"
    keys = src.keys()
    if sgm.is_sgm(keys):
        return "sgm"
    if diffsynth.is_patch(keys):
        return "diffsynth"
    raise ConversionError(f"{src.path}: unrecognised layout; expected a Stability single file (keys "
                          f"'{sgm.MARKER}...'), a diffusers folder, or an ExVideo patch ('blocks.N...'); "
                          f"first keys: {sorted(keys)[:5]}")


def transformed_shape(shapes: Sequence[tuple], transform: str) -> tuple:
    if transform == diffusers.IDENTITY:
        return tuple(shapes[0])
    if transform == diffusers.CONV1X1:
        return tuple(shapes[0]) + (1, 1)
    if transform == diffusers.TRANSPOSE:
        return tuple(reversed(shapes[0]))
    if transform == diffusers.CONCAT:
        if len({tuple(s[1:]) for s in shapes}) != 1:
            raise ConversionError(f"cannot concatenate shapes {shapes}")
        return (sum(s[0] for s in shapes),) + tuple(shapes[0][1:])
    raise ConversionError(f"unknown transform {transform!r}")


def apply_transform(arrays: Sequence[np.ndarray], transform: str) -> np.ndarray:
    if transform == diffusers.IDENTITY:
        return arrays[0]
    if transform == diffusers.CONV1X1:
        return arrays[0].reshape(arrays[0].shape + (1, 1))
    if transform == diffusers.TRANSPOSE:
        return np.ascontiguousarray(arrays[0].T)
    if transform == diffusers.CONCAT:
        return np.concatenate(arrays, 0)
    raise ConversionError(f"unknown transform {transform!r}")


def _resolve_config(base_layout: str, base: Source, config, has_patch: bool) -> SVDConfig:
    if base_layout == "diffusers":
        if config is not None:
            raise ConversionError("a diffusers folder carries its own architecture (config.json); do not pass "
                                  "--config with it")
        sched = base.path / "scheduler" / "scheduler_config.json"
        import json
        cfg = diffusers.config_from_diffusers(base.config("unet"), base.config("vae"),
                                              base.config("image_encoder"),
                                              json.loads(sched.read_text()) if sched.is_file() else None,
                                              name=base.path.name)
        return cfg
    if config is None:
        default = REPO_CONFIGS / ("exvideo_svd_128f.yaml" if has_patch else "svd_xt.yaml")
        if not default.is_file():
            raise ConversionError(f"no --config given and the default {default} does not exist")
        logger.warning("no --config given: using %s (pass --config configs/svd.yaml for the 14-frame SVD; "
                       "both hold the same tensors)", default)
        config = default
    return config if isinstance(config, SVDConfig) else load_config(config)


def make_plan(sources: Sequence[Source], config=None) -> Plan:
    """Decide and check where every parameter comes from. ``config``: an SVDConfig, a YAML path, or None."""
    layouts = {str(s.path): detect_layout(s) for s in sources}
    bases = [s for s in sources if layouts[str(s.path)] in ("sgm", "diffusers")]
    patches = [s for s in sources if layouts[str(s.path)] == "diffsynth"]
    if len(bases) != 1:
        if not bases and patches:
            raise ConversionError(f"{patches[0].path} is an ExVideo patch (temporal blocks only); give the base "
                                  f"model too: --source svd_xt.safetensors --source {patches[0].path.name}")
        raise ConversionError(f"need exactly one base model (Stability file or diffusers folder), got "
                              f"{[str(s.path) for s in bases] or 'none'}")
    if len(patches) > 1:
        raise ConversionError(f"at most one ExVideo patch, got {[str(s.path) for s in patches]}")
    base = bases[0]
    base_layout = layouts[str(base.path)]
    cfg = _resolve_config(base_layout, base, config, bool(patches))
    if patches and cfg.exvideo is None:
        raise ConversionError(f"{patches[0].path} is an ExVideo patch but the config {cfg.name!r} has no exvideo "
                              f"section (use configs/exvideo_svd_128f.yaml)")

    from exvideo_ms.models.svd import build_model
    expected = network_shapes(build_model(cfg, allocate=False))

    # where each parameter comes from: base first, then the patch replaces
    if base_layout == "sgm":
        base_map = {}
        for key in base.keys():
            name = sgm.target(key)
            if name is not None:
                base_map[name] = ((key,), diffusers.IDENTITY)
    else:
        base_map = {n: v for n, v in diffusers.table(cfg, expected).items() if v is not None}
    plan_src: Dict[str, Tuple[Source, Tuple[str, ...], str]] = {n: (base,) + v for n, v in base_map.items()}
    replaced: Dict[str, List[str]] = defaultdict(list)
    patch_map = {}
    if patches:
        patch = patches[0]
        try:
            patch_map = diffsynth.table(patch.keys())
        except KeyError as e:
            raise ConversionError(f"{patch.path}: {e.args[0]}") from None
        for name, key in patch_map.items():
            if name in plan_src:
                replaced[str(base.path)].extend(plan_src[name][1])
            plan_src[name] = (patch, (key,), diffusers.IDENTITY)

    errors = []
    # every source key accounted for
    unused: Dict[str, List[str]] = {}
    for src in sources:
        path = str(src.path)
        layout = layouts[path]
        used = {k for s, keys, _ in plan_src.values() if s is src for k in keys} | set(replaced.get(path, []))
        if layout == "sgm":
            known = [k for k in src.keys() if k not in used and sgm.is_unused(k)]
        elif layout == "diffusers":
            known = [k for k in src.keys() if k not in used and k in diffusers.CLIP_UNUSED]
        else:
            known = []
        unknown = sorted(set(src.keys()) - used - set(known))
        if unknown:
            errors.append(f"{path}: {len(unknown)} key(s) the {cfg.name!r} networks have no place for: "
                          + ", ".join(unknown[:12]) + (" ..." if len(unknown) > 12 else ""))
        unused[path] = known
    # every parameter filled exactly once, with the right shape
    missing = sorted(set(expected) - set(plan_src))
    if missing:
        errors.append(f"{len(missing)} network parameter(s) found in no source: "
                      + ", ".join(f"{n} {expected[n]}" for n in missing[:12]) + (" ..." if len(missing) > 12 else ""))
    extra = sorted(set(plan_src) - set(expected))
    if extra:
        errors.append(f"{len(extra)} mapped tensor(s) the network does not have: "
                      + ", ".join(f"{n} <- {plan_src[n][0].path}:{plan_src[n][1][0]}" for n in extra[:12]))
    entries = []
    mismatched = []
    for name, shape in expected.items():
        if name not in plan_src:
            continue
        src, keys, transform = plan_src[name]
        got = transformed_shape([src.shape(k) for k in keys], transform)
        if tuple(got) != tuple(shape):
            mismatched.append(f"{name}: network {tuple(shape)} vs {src.path}:{'+'.join(keys)} {tuple(got)}")
        entries.append(Entry(name, tuple(shape), src, keys, transform))
    if mismatched:
        errors.append(f"{len(mismatched)} shape mismatch(es) (is this checkpoint for the {cfg.name!r} "
                      f"architecture?): " + "; ".join(mismatched[:8]) + (" ..." if len(mismatched) > 8 else ""))
    if errors:
        raise ConversionError("cannot convert:\n  " + "\n  ".join(errors))
    return Plan(cfg, entries, layouts, unused, dict(replaced))


def write_plan(plan: Plan, output, dtype: str = "fp32", progress: bool = True) -> None:
    """Stream the planned tensors into ``output`` (``.ckpt`` or ``.safetensors``), one at a time."""
    layout = {}
    for e in plan.entries:
        layout[e.name] = (e.shape, dtype)
    with CheckpointWriter(output, layout) as writer:
        for e in tqdm(plan.entries, desc=f"writing {Path(output).name}", unit="tensor", disable=not progress):
            array = apply_transform([e.source.get(k) for k in e.keys], e.transform)
            if tuple(array.shape) != e.shape:
                raise ConversionError(f"{e.name}: {e.source.path} delivered shape {array.shape}, header said "
                                      f"{e.shape} (corrupt source?)")
            writer.write(e.name, cast(array, dtype), dtype_key(array, dtype))


def check_destinations(paths: Sequence, destinations: Sequence[Path], overwrite: bool) -> None:
    """Never write onto a source (a source file, or a file inside a source folder), and never replace an
    existing file unless ``overwrite``."""
    for dest in destinations:
        target = Path(dest).resolve()
        for src in paths:
            src = Path(src).resolve()
            if target == src or (src.is_dir() and target.is_relative_to(src) and target.exists()):
                raise ConversionError(f"{dest} would overwrite the source {src}; write the output elsewhere")
    existing = [str(d) for d in destinations if Path(d).exists()]
    if existing and not overwrite:
        raise ConversionError(f"{' and '.join(existing)} already exist(s); pass --overwrite to replace, or choose "
                              f"another --output")


def convert(paths: Sequence, output, dtype: str = "fp32", config=None, allow_pickle: bool = False,
            write_config: Optional[bool] = None, progress: bool = True, overwrite: bool = False) -> Plan:
    """Convert ``paths`` (one base, optionally one ExVideo patch) to ``output`` and return the plan.

    The matching YAML config is written beside the output (``x/m.ckpt`` -> ``x/m.yaml``), so the pair runs as
    it is. Nothing is written unless every check passes; an existing output or YAML is replaced only with
    ``overwrite``, and a source never.
    """
    output = Path(output)
    if output.suffix not in (".ckpt", ".safetensors"):
        raise ConversionError(f"--output must end in .ckpt or .safetensors, got {output}")
    write_config = write_config is None or write_config
    check_destinations(paths, [output] + ([output.with_suffix(".yaml")] if write_config else []), overwrite)
    sources = [open_source(p, allow_pickle) for p in paths]
    plan = make_plan(sources, config)
    write_plan(plan, output, dtype, progress)
    if write_config:
        yaml_path = output.with_suffix(".yaml")
        save_config(plan.config, yaml_path, header=f"# written by svd_tools/convert.py for {output.name}")
    return plan
