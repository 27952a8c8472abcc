"""GEGLU's value · GELU(gate) (exact GELU) as one fused CPU kernel.

MindSpore 2.8's CPU ``Erf`` kernel is ~8× slower than PyTorch's GELU (benchmarks/bench_geglu.py), and it sits in
every transformer's feed-forward. ``geglu.cc`` computes value · GELU(gate) straight from the projection's
(…, 2·inner) output, and its gradient, in one vectorised pass (erf by Abramowitz & Stegun 7.1.26, absolute
error ≤ 1.5e-7; measured against float64 in tests/test_geglu.py). It is compiled once per machine with the
system's C++ compiler into the user cache and called through ``ops.Custom(func_type="aot")``.

Where it cannot be used — not CPU, not float32, no compiler — ``GEGLU`` computes the same function with
MindSpore ops (``split``, ``erf``); the reason is logged once, as a warning when a CPU float32 run loses the kernel.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from mindspore import ops

from exvideo_ms import backend

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("geglu.cc")
# -fno-trapping-math lets GCC vectorise the float->int conversion of the exp; it changes no result
CXX_FLAGS = ["-O3", "-fno-trapping-math", "-fPIC", "-shared", "-std=c++17", "-pthread"]

_FAILURE: Optional[str] = None
_OPS = None


def build(cache: Optional[Path] = None) -> Path:
    """Compile geglu.cc (once per source, flags and compiler) and return the shared library's path;
    raises RuntimeError naming the compiler and its message when that fails."""
    cxx = os.environ.get("CXX", "c++")
    exe = shutil.which(cxx)
    if exe is None:
        raise RuntimeError(f"no C++ compiler {cxx!r} on PATH (set CXX)")
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join([exe] + CXX_FLAGS).encode()).hexdigest()[:16]
    cache = Path(cache) if cache is not None else backend.user_cache_dir("kernels")
    lib = cache / f"geglu-{digest}.so"
    if lib.is_file():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run([exe, *CXX_FLAGS, "-o", str(tmp), str(SOURCE)], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{exe} failed on {SOURCE}: {proc.stderr.strip()[-2000:]}")
    tmp.replace(lib)  # atomic: concurrent processes (msrun workers) never load a half-written library
    logger.info("compiled the fused GEGLU kernel: %s", lib)
    return lib


def fused_ops():
    """(forward, backward) ``ops.Custom`` primitives, or None when the kernel cannot be built (logged once)."""
    global _FAILURE, _OPS
    if _OPS is not None or _FAILURE is not None:
        return _OPS
    try:
        library = build()
        # when set, MindSpore loads custom-op libraries only from below this one directory (measured)
        allowed = os.environ.get("MS_CUSTOM_AOT_WHITE_LIST")
        if allowed and not library.resolve().is_relative_to(Path(allowed).resolve()):
            raise RuntimeError(f"{library} is outside MS_CUSTOM_AOT_WHITE_LIST={allowed}")
    except (RuntimeError, OSError) as e:
        _FAILURE = str(e)
        logger.warning("fused GEGLU kernel unavailable, using MindSpore's erf (about 8x slower on CPU): %s", e)
        return None
    backward = ops.Custom(f"{library}:GegluBackward", out_shape=lambda h, dout: h, out_dtype=lambda h, dout: h,
                          func_type="aot")

    def bprop(h, out, dout):
        return (backward(h, dout),)

    forward = ops.Custom(f"{library}:GegluForward", out_shape=lambda h: h[:-1] + [h[-1] // 2],
                         out_dtype=lambda h: h, func_type="aot", bprop=bprop)
    _OPS = (forward, backward)
    return _OPS


def failure() -> Optional[str]:
    """Why the fused kernel is not available (None when it is, or has not been asked for yet)."""
    return _FAILURE
