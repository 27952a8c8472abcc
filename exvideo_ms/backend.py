"""Every backend-specific choice in one place, each with its reason: the ``Choices`` of a device and chip.

| choice                         | Atlas A2 (910B)   | Atlas (910A)      | GPU              | CPU                   |
|--------------------------------|-------------------|-------------------|------------------|-----------------------|
| attention kernel               | flash_attention_score, batch ≤ 2048 per call | plain | plain | plain          |
| causal (CLIP text) attention   | plain             | plain             | plain            | plain                 |
| low-precision dtype            | bfloat16          | float16           | float16          | float16               |
| inference dtype (default)      | bfloat16          | float16           | float32          | float32               |
| frozen weights in training     | bfloat16          | float16           | float16          | float32               |
| Conv3d compute dtype           | float16           | float16           | as the weights   | as the weights        |
| GroupNorm kernel               | ops.group_norm    | ops.group_norm    | ops.group_norm   | two BatchNorm kernels |
| GEGLU                          | MindSpore ops     | MindSpore ops     | MindSpore ops    | fused kernel (geglu.cc)|
| graph jit level                | O0                | O0                | O0               | O0                    |
| ZeRO-2 gradient reduce-scatter | ops.ReduceScatter | ops.ReduceScatter | ops.ReduceScatter | AllReduce + own slice |

Two choices are made per process rather than per network. ``setup_device`` launches ops synchronously on the CPU
(``CPU_LAUNCH_BLOCKING`` gives the reason). The other lives in ``exvideo_ms/allocator.py``
because it must be made before MindSpore is imported: the host memory allocator. image_to_video.py and train.py
relaunch themselves with the jemalloc MindSpore's wheel ships (``EXVIDEO_MS_ALLOCATOR=system`` keeps glibc's); on
every device the compiled graph's host objects then take about two thirds of glibc's memory (that module gives the
figures).

A network is built for one ``Choices`` value, passed to its constructor (``build_model(cfg, choices=...)``);
``choices()`` is the process's own: that of the device ``setup_device`` selected, or the one ``use`` forces.

**The switch for tests.** ``with backend.use(backend.choices_for("Ascend", "ascend910b")):`` builds networks
with a 910B's choices on this CPU; the NPU-only kernels they select are then the contract doubles of
``exvideo_ms/contracts.py`` (they record each call, assert its documented preconditions and compute the same
math in float32). ``use`` also takes any ``dataclasses.replace`` of a ``Choices`` (one attention kind plain,
a smaller memory budget, GEGLU through ops).

Documentation relied on (MindSpore 2.8.0 wheel unless stated):
- ``ops.flash_attention_score`` (ops/operations/manually_defined/ops_def.py l.1762-1789): "B: Batch size. Value
  range 1 to 2k", "N1 ... Value range 1 to 256", "D: Head size ... a multiple of 16, with the max value of 512",
  "The supported dtype is float16 and bfloat16", "Only support on Atlas A2 training series".
- ``nn.Conv3d`` (nn/layer/conv.py l.717): "input data type support float16 and float32 in CPU and GPU, and only
  float16 in Ascend"; mindone docs/diffusers/limitations.md: "Conv3d FP32 is unsupported on Ascend".
- ``ops.batch_norm`` (ops/function/nn_func.py l.6917): "If `training` is `True`, `weight`, `bias`, `running_mean`
  and `running_var` are Parameters" — our CPU GroupNorm passes plain tensors, measured correct on CPU only;
  ``ops.group_norm`` (l.6772) lists Ascend, GPU and CPU.
- bfloat16 on 910A: none (the flash docstring's "Atlas A2 only"; CANN's bf16 support starts with Atlas A2).
  MindSpore tells the chips apart by ``MSContext.get_ascend_soc_version()`` ("ascend910" = 910A,
  "ascend910b"/"ascend910_93" = A2/A3), as its own ``mindspore/amp.py`` l.48-55 does.
- ``ops.ReduceScatter`` (ops/operations/comm_ops.py, its docstring): "Supported Platforms: ``Ascend`` ``GPU``";
  on CPU 2.8.0 raises "Unsupported op [ReduceScatter] on CPU" (measured under msrun with 2 workers, where
  AllReduce with SUM and AllGather run; AllReduce with MAX raises "only support reduce sum on CPU").
- ``set_context(jit_config=...)`` is deprecated (context.py l.1401: "Please use the related parameter of
  mindspore.jit"); ``mindspore.jit`` builds a ``JitConfig`` (common/api.py l.226), which we set per cell.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet, Optional

import mindspore as ms

logger = logging.getLogger(__name__)

DEVICES = ("Ascend", "GPU", "CPU")
DTYPES = {"fp32": ms.float32, "fp16": ms.float16, "bf16": ms.bfloat16}
ATTENTION_KINDS = ("spatial", "temporal", "vae", "image", "text")  # where an attention call sits (nn/attention.py)
# attention with a causal mask (the CLIP text tower, metrics only): always plain. flash_attention_score would take
# the mask (atten_mask / sparse_mode), but no run has checked that path, and 77 tokens once per prompt cost nothing
PLAIN_ONLY_KINDS = frozenset({"text"})

# Chips by MindSpore's SoC name (mindspore/amp.py l.48-55: _ascend_910a_target / _ascend_910b_target)
ATLAS_A2_SOCS = ("ascend910b", "ascend910_93")  # flash attention and bfloat16
ATLAS_910A_SOCS = ("ascend910",)  # neither

# Largest temporary (attention scores, feed-forward hidden layer) computed in one piece; larger ones are
# computed in exact slices along their batch axis (frames for spatial layers, positions for temporal ones).
DEFAULT_CHUNK_BYTES = 512 * 2 ** 20

# MindSpore versions whose APIs this package uses (pyproject's range; CI runs 2.8.0, the suite also passed on
# 2.7.0). 2.9.0 and 2.10.0 run CPU Conv2D/Conv3d ~100-150x slower (measured on our CI machine).
SLOW_CPU_CONV_VERSIONS = ("2.9.", "2.10.")


@dataclass(frozen=True)
class Choices:
    """Every backend-specific decision, fixed when a network is built (see the module docstring)."""

    device: str  # Ascend | GPU | CPU
    chip: str  # the SoC name on Ascend, else "gpu" / "cpu"
    flash_attention: FrozenSet[str]  # attention kinds computed by the NPU flash kernel (rest: plain)
    low_precision: str  # the chip's fast float dtype (fp16 / bf16)
    inference_dtype: str  # image_to_video's default UNet / image-encoder dtype
    frozen_dtype: str  # frozen weights in training
    conv3d_dtype: Optional[str]  # dtype every 3-D convolution computes in (None: the weights')
    group_norm: str  # "batch_norm" (two fused BatchNorm kernels) | "group_norm" (ops.group_norm)
    geglu: str  # "fused" (CPU kernel, geglu.cc) | "ops"
    jit_level: str
    reduce_scatter: bool  # ops.ReduceScatter has a kernel (else ZeRO-2 reduces with AllReduce, keeps its slice)
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    emulated: bool = False  # another chip's choices on this device: NPU-only kernels are contract doubles

    def __post_init__(self):
        unknown = set(self.flash_attention) - set(ATTENTION_KINDS)
        if unknown:
            raise ValueError(f"unknown attention kind(s) {sorted(unknown)}; known: {ATTENTION_KINDS}")
        if self.flash_attention & PLAIN_ONLY_KINDS:
            raise ValueError(f"{sorted(self.flash_attention & PLAIN_ONLY_KINDS)} attention is plain on every device "
                             f"(causal mask; see PLAIN_ONLY_KINDS)")
        if self.group_norm not in ("batch_norm", "group_norm"):
            raise ValueError(f"group_norm must be 'batch_norm' or 'group_norm', got {self.group_norm!r}")
        if self.geglu not in ("fused", "ops"):
            raise ValueError(f"geglu must be 'fused' or 'ops', got {self.geglu!r}")
        if self.chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, got {self.chunk_bytes}")
        for name in ("low_precision", "inference_dtype", "frozen_dtype", "conv3d_dtype"):
            value = getattr(self, name)
            if value is not None and value not in DTYPES:
                raise ValueError(f"{name} must be one of {sorted(DTYPES)}, got {value!r}")

    @property
    def bf16(self) -> bool:
        """Whether the chip has bfloat16 kernels (Atlas A2 and GPUs; not 910A, not MindSpore's CPU kernels)."""
        return self.chip in ATLAS_A2_SOCS or self.device == "GPU"

    def attention_impl(self, kind: str) -> str:
        """``"flash"`` or ``"plain"`` for an attention call of ``kind`` (head sizes are checked per call)."""
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention kind {kind!r}; known: {ATTENTION_KINDS}")
        return "flash" if kind in self.flash_attention else "plain"

    def dtype(self, name: str):
        """The MindSpore dtype of one of the dtype fields (``choices.dtype("frozen_dtype")``), or None."""
        value = getattr(self, name)
        return None if value is None else DTYPES[value]


def choices_for(device: str, chip: Optional[str] = None) -> Choices:
    """The choices for ``device`` (and, on Ascend, the SoC name MindSpore reports). Pure: no device needed."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "Ascend":
        chip = chip or ""
        a2 = chip in ATLAS_A2_SOCS
        if not a2 and chip not in ATLAS_910A_SOCS:
            logger.warning("unknown Ascend SoC %r: using the 910A choices (no flash attention, float16)", chip)
        low = "bf16" if a2 else "fp16"
        # flash everywhere its documented limits allow (A2 only); every call is split to batch <= 2048
        flash = frozenset(ATTENTION_KINDS) - PLAIN_ONLY_KINDS if a2 else frozenset()
        # Conv3d: "only float16 in Ascend" (nn.Conv3d docstring); GroupNorm: batch_norm(training=True) wants
        # Parameters there, so ops.group_norm; O0 as mindone's published SVD training on 910B
        return Choices("Ascend", chip, flash, low, low, low, "fp16", "group_norm", "ops", "O0", True)
    if device == "GPU":
        # float32 inference by default: no GPU run of this code has been verified yet
        return Choices("GPU", "gpu", frozenset(), "fp16", "fp32", "fp16", None, "group_norm", "ops", "O0", True)
    # CPU: MindSpore 2.8 has no CPU bf16 conv/matmul kernels; fp16 frozen weights measured slower and larger
    # than fp32 (benchmarks/bench_train.py); the two-BatchNorm GroupNorm and the fused GEGLU measured fastest
    # (benchmarks/bench_norm.py, bench_geglu.py); ReduceScatter has no CPU kernel (measured)
    return Choices("CPU", "cpu", frozenset(), "fp16", "fp32", "fp32", None, "batch_norm", "fused", "O0", False)


_FORCED: Optional[Choices] = None


def _available(device: str) -> bool:
    """Whether this MindSpore installation loaded the device's plugin (the check behind
    ``mindspore.device_context.<device>.is_available``, without its log lines)."""
    from mindspore._c_expression import MSContext
    try:
        return bool(MSContext.get_instance().is_pkg_support_device(device))
    except Exception:  # an older build without this query
        return device == "CPU"


def ascend_soc() -> str:
    """MindSpore's SoC name ("ascend910b", "ascend910", ...; "" off Ascend)."""
    from mindspore._c_expression import MSContext
    try:
        return str(MSContext.get_instance().get_ascend_soc_version())
    except Exception:
        return ""


def best_device() -> str:
    """The first available of Ascend, GPU, CPU."""
    for device in DEVICES:
        if device == "CPU" or _available(device):
            return device
    return "CPU"


def device_target() -> str:
    return ms.get_context("device_target")


def choices() -> Choices:
    """The choices networks are built with now: forced by ``use``, else those of the selected device."""
    if _FORCED is not None:
        return _FORCED
    device = device_target()
    return choices_for(device, ascend_soc() if device == "Ascend" else None)


def resolve(c: Choices) -> Choices:
    """``c`` as this process can run it: another device's choices are emulated (their NPU-only kernels are
    contract doubles, contracts.py)."""
    if not isinstance(c, Choices):
        raise TypeError(f"expected a backend.Choices value, got {type(c).__name__}")
    emulated = c.device != device_target()
    return c if c.emulated == emulated else dataclasses.replace(c, emulated=emulated)


@contextlib.contextmanager
def use(forced: Choices):
    """Build networks with ``forced`` choices while the block runs (tests: another chip's choices on this
    device; NPU-only kernels then run as contract doubles)."""
    global _FORCED
    forced = resolve(forced)
    previous, _FORCED = _FORCED, forced
    try:
        yield forced
    finally:
        _FORCED = previous


def emulate(device: str, chip: Optional[str] = None):
    """``use(choices_for(device, chip))``: e.g. ``with backend.emulate("Ascend", "ascend910b"):``."""
    return use(choices_for(device, chip))


# The CPU launches each op synchronously (mindspore.runtime.launch_blocking, the 2.8 spelling of
# set_context(pynative_synchronize=True)): MindSpore's asynchronous launch pipeline has nothing to overlap on a CPU
# and its threads spin. Measured (2 cores): a PyNative call of the tiny test SVD (8 frames, 4 steps) 23-28 s and
# 46-56 CPU-seconds asynchronous, 5.5-7 s and 11-14 CPU-seconds synchronous, the same video; graph mode the same
# either way (README's command, three runs each: cold 38.7 vs 42.0 s, warm 21.1-22.3 vs 19.9-22.4 s, the same
# video; bench_train's mid-size exvideo step, one run each: 9.89 vs 10.18 s). Devices keep the asynchronous launch
# (it overlaps host and device work there).
CPU_LAUNCH_BLOCKING = True


def setup_device(device_target: Optional[str] = None, mode: int = 1, device_id: Optional[int] = None) -> str:
    """Select device and execution mode (0 = graph, 1 = PyNative, as mindone's ``--mode``)."""
    if device_target is None:
        device_target = best_device()
        logger.info("device_target not given: using %s (best available)", device_target)
    if device_target not in DEVICES:
        raise ValueError(f"device_target must be one of {DEVICES}, got {device_target!r}")
    if device_target != "CPU" and not _available(device_target):
        raise ValueError(f"device_target {device_target} is not available in this MindSpore installation "
                           f"(mindspore {ms.__version__}); available here: "
                           f"{', '.join(d for d in DEVICES if d == 'CPU' or _available(d))}")
    if mode not in (0, 1):
        raise ValueError(f"mode must be 0 (graph) or 1 (PyNative), got {mode!r}")
    if device_id is None:
        device_id = int(os.environ.get("DEVICE_ID", "0"))
    if device_target == "CPU":
        ms.set_device("CPU")
        if CPU_LAUNCH_BLOCKING:
            ms.runtime.launch_blocking()
        if ms.__version__.startswith(SLOW_CPU_CONV_VERSIONS):
            logger.warning("mindspore %s runs CPU Conv2D/Conv3d about 100-150x slower than 2.8.0 (measured); "
                           "install mindspore==2.8.0 for CPU work", ms.__version__)
    else:
        ms.set_device(device_target, device_id)
    ms.set_context(mode=ms.GRAPH_MODE if mode == 0 else ms.PYNATIVE_MODE)
    c = choices()
    logger.info("backend: %s (%s): attention %s, low precision %s, Conv3d %s, GroupNorm %s", c.device, c.chip,
                "flash" if c.flash_attention else "plain", c.low_precision, c.conv3d_dtype or "as weights",
                c.group_norm)
    return device_target


def set_jit_level(cell, level: str) -> None:
    """Compile ``cell`` and every cell inside it (whichever is called from Python) at ``level`` (O0/O1): the
    ``JitConfig`` that ``mindspore.jit(jit_level=...)`` builds, instead of the deprecated global jit_config."""
    if level not in ("O0", "O1"):
        raise ValueError(f"jit_level must be O0 or O1, got {level!r}")
    config = ms.JitConfig(jit_level=level)
    for _, sub in cell.cells_and_names():
        if not sub.jit_config_dict:
            sub.set_jit_config(config)


def user_cache_dir(kind: str) -> Path:
    """``$XDG_CACHE_HOME/exvideo_ms/<kind>`` (``~/.cache/...`` when unset): compiled graphs and kernels."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "exvideo_ms" / kind


def _package_sources_digest() -> str:
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def compile_cache_dir(root, key: dict) -> Path:
    """The directory of MindSpore's compile cache for one graph configuration: ``root/<digest>``, the digest of
    ``key`` (every option that changes a compiled graph's shapes or structure), the MindSpore version and
    this package's sources. MindSpore reuses a cached graph without checking input shapes (measured: a
    16-frame run over a 32-frame cache crashed in a CPU memcpy), so configurations never share a directory.
    Weights are not part of the cache (measured: a warm cache with another checkpoint gives the output of
    an uncached run with that checkpoint, byte for byte), so checkpoints do not belong in ``key``."""
    payload = json.dumps({"key": key, "mindspore": ms.__version__, "sources": _package_sources_digest()},
                         sort_keys=True, default=str)
    return Path(root).expanduser() / hashlib.sha256(payload.encode()).hexdigest()[:16]


# other spellings of "off" a user may type for the compile cache: refused, where they would name a folder
OFF_WORDS = ("none", "off", "false", "no", "disable", "disabled")


def compile_cache_root(value: Optional[str], option: str) -> Optional[Path]:
    """The compile cache's root folder of ``option``'s ``value`` (auto: user_cache_dir("compile"); None: off),
    checked now, before anything is compiled."""
    from exvideo_ms import media
    if value is None:
        return None
    if str(value).lower() in OFF_WORDS:
        raise ValueError(f"{option} {value}: null turns the compile cache off; for a folder of that name in the "
                         f"working directory give ./{value}")
    root = user_cache_dir("compile") if value == "auto" else Path(value)
    return media.check_output_dir(root, option)


def enable_compile_cache(path) -> bool:
    """Turn on MindSpore's compile cache in ``path`` for graphs compiled from now on in this process; returns
    whether the directory already held a cache (then compilation runs only the backend passes)."""
    path = Path(path)
    reused = path.is_dir() and any(path.iterdir())
    path.mkdir(parents=True, exist_ok=True)
    os.environ["MS_COMPILER_CACHE_ENABLE"] = "1"
    os.environ["MS_COMPILER_CACHE_PATH"] = str(path)
    logger.info("compile cache %s (%s)", path, "reused" if reused else "new")
    return reused
