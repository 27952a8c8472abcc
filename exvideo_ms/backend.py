"""Every backend-specific choice in one place: device, execution mode, dtypes, attention kernel, parallelism.

| capability                    | Ascend                         | GPU              | CPU                      |
|-------------------------------|--------------------------------|------------------|--------------------------|
| fused attention               | ``ops.flash_attention_score``  | plain            | plain                    |
| low-precision dtype           | bfloat16                       | float16          | float16 (no bf16 kernels)|
| optimizer-parallel sharding   | yes                            | no (data par.)   | no (data par.)           |
| GEGLU (exact GELU)            | MindSpore ops                  | MindSpore ops    | fused kernel (geglu.cc)  |
| graph jit level               | O1                             | O0               | O0                       |
| compile cache (image_to_video)| MindSpore's, keyed per shape   | same             | same (verified)          |

Cells read these functions when they are *built* (not in ``construct``), so a network built after
``setup_device`` carries its backend's choices as graph constants.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Optional

import mindspore as ms

logger = logging.getLogger(__name__)

DEVICES = ("Ascend", "GPU", "CPU")

# Set by tests to run the same network through each attention implementation the backend allows.
_ATTENTION_OVERRIDE: Optional[str] = None
_GEGLU_OVERRIDE: Optional[str] = None
# Largest temporary (attention scores, feed-forward hidden layer) computed in one piece; larger ones are
# computed in exact slices along their batch axis (frames for spatial layers, positions for temporal ones).
DEFAULT_CHUNK_BYTES = 512 * 2 ** 20
_CHUNK_BYTES = DEFAULT_CHUNK_BYTES


def _available(device: str) -> bool:
    """Whether this MindSpore installation loaded the device's plugin (the check behind
    ``mindspore.device_context.<device>.is_available``, without its log lines)."""
    from mindspore._c_expression import MSContext
    try:
        return bool(MSContext.get_instance().is_pkg_support_device(device))
    except Exception:  # an older build without this query
        return device == "CPU"


def best_device() -> str:
    """The first available of Ascend, GPU, CPU."""
    for device in DEVICES:
        if device == "CPU" or _available(device):
            return device
    return "CPU"


def setup_device(device_target: Optional[str] = None, mode: int = 1, device_id: Optional[int] = None,
                 jit_level: Optional[str] = None) -> str:
    """Select device and execution mode (0 = graph, 1 = PyNative, as mindone's ``--mode``)."""
    if device_target is None:
        device_target = best_device()
        logger.info("device_target not given: using %s (best available)", device_target)
    if device_target not in DEVICES:
        raise ValueError(f"device_target must be one of {DEVICES}, got {device_target!r}")
    if device_target != "CPU" and not _available(device_target):
        raise RuntimeError(f"device_target {device_target} is not available in this MindSpore installation")
    if mode not in (0, 1):
        raise ValueError(f"mode must be 0 (graph) or 1 (PyNative), got {mode!r}")
    if device_id is None:
        device_id = int(os.environ.get("DEVICE_ID", "0"))
    if device_target == "CPU":
        ms.set_device("CPU")
    else:
        ms.set_device(device_target, device_id)
    ms.set_context(mode=ms.GRAPH_MODE if mode == 0 else ms.PYNATIVE_MODE)
    if mode == 0:
        ms.set_context(jit_config={"jit_level": jit_level or default_jit_level(device_target)})
    return device_target


def device_target() -> str:
    return ms.get_context("device_target")


def default_jit_level(device: Optional[str] = None) -> str:
    # O1 enables Ascend's graph-kernel fusion; O0 (kernel by kernel) is the tested level elsewhere.
    return "O1" if (device or device_target()) == "Ascend" else "O0"


def low_precision_dtype(device: Optional[str] = None):
    """bf16 on Ascend; fp16 elsewhere (MindSpore 2.8 has no CPU bf16 conv/matmul kernels)."""
    return ms.bfloat16 if (device or device_target()) == "Ascend" else ms.float16


def frozen_weight_dtype(device: Optional[str] = None):
    """dtype of the frozen weights in training: bf16 on Ascend, fp16 on GPU, fp32 on CPU, where fp16 weights
    are slower and larger at run time (benchmarks/bench_train.py, mid-size ExVideo step at 8 frames, 128²:
    14.3 s and 21.6 GiB peak with fp16 frozen weights, 10.8 s and 16.8 GiB with fp32, both measured with the
    element-wise AdamW that the fused kernel replaced)."""
    device = device or device_target()
    return ms.float32 if device == "CPU" else low_precision_dtype(device)


def attention_impl() -> str:
    """``"flash"`` (Ascend FlashAttentionScore) or ``"plain"`` (batched matmul + softmax)."""
    if _ATTENTION_OVERRIDE is not None:
        return _ATTENTION_OVERRIDE
    return "flash" if device_target() == "Ascend" else "plain"


def set_attention_impl(impl: Optional[str]) -> None:
    """Force an attention implementation for networks built afterwards (None = backend default)."""
    global _ATTENTION_OVERRIDE
    if impl not in (None, "flash", "plain"):
        raise ValueError(f"attention implementation must be 'flash', 'plain' or None, got {impl!r}")
    if impl == "flash" and device_target() != "Ascend":
        raise ValueError(f"flash attention needs Ascend; this process runs on {device_target()}")
    _ATTENTION_OVERRIDE = impl


def geglu_impl() -> str:
    """``"fused"`` (our CPU kernel, exvideo_ms/nn/geglu.cc, float32) or ``"ops"`` (MindSpore's split and erf)."""
    if _GEGLU_OVERRIDE is not None:
        return _GEGLU_OVERRIDE
    return "fused" if device_target() == "CPU" else "ops"


def set_geglu_impl(impl: Optional[str]) -> None:
    """Force a GEGLU implementation for networks built afterwards (None = backend default)."""
    global _GEGLU_OVERRIDE
    if impl not in (None, "fused", "ops"):
        raise ValueError(f"GEGLU implementation must be 'fused', 'ops' or None, got {impl!r}")
    if impl == "fused" and device_target() != "CPU":
        raise ValueError(f"the fused GEGLU kernel is a CPU kernel; this process runs on {device_target()}")
    _GEGLU_OVERRIDE = impl


def chunk_bytes() -> int:
    return _CHUNK_BYTES


def set_chunk_bytes(nbytes: Optional[int]) -> None:
    """Memory budget for one attention-score or feed-forward temporary, for networks built afterwards
    (None = default, 512 MiB). Slicing is exact: it only changes peak memory and speed."""
    global _CHUNK_BYTES
    if nbytes is not None and nbytes < 1:
        raise ValueError(f"chunk budget must be positive bytes, got {nbytes}")
    _CHUNK_BYTES = DEFAULT_CHUNK_BYTES if nbytes is None else int(nbytes)


def supports_parallel_optimizer(device: Optional[str] = None) -> bool:
    """MindSpore's ``enable_parallel_optimizer`` raises "only supports Ascend" elsewhere (measured on CPU)."""
    return (device or device_target()) == "Ascend"


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
