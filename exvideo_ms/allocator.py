"""The host memory allocator of a command's process: MindSpore's bundled jemalloc by default, glibc's on request.

Why (issue 23, measured on CPU with MindSpore 2.8.0; ``python -m benchmarks.bench_allocator``): a compiled
MindSpore graph keeps many small host objects per kernel, and glibc's allocator holds about half as much again in
fragmented heap. The mid-size UNet's forward graph keeps 1316 MiB under glibc and 879 MiB under jemalloc (pages
returned at once), and the mid-size train step peaks at 7.70 GiB instead of 8.70, compiling in 107 s instead of 138.
CANN's installation guide recommends the same preload for Ascend hosts
("Memory Allocator Configuration", hiascend.com/document/detail/en/canncommercial/850/softwareinst/instg/
instg_0099.html: ``export LD_PRELOAD=.../libjemalloc.so``), and the MindSpore wheel ships the library
(``mindspore/lib/libjemalloc.so.2``).

An allocator is chosen when a process starts (``LD_PRELOAD``), so ``relaunch()`` runs first thing in a
command's ``__main__`` block: it replaces the process by the same command with jemalloc preloaded (same pid,
arguments and environment), before MindSpore is imported. Set ``EXVIDEO_MS_ALLOCATOR=system`` to keep glibc's.
A preload the user chose (jemalloc, tcmalloc or mimalloc already in ``LD_PRELOAD``) is left alone, as is
``MALLOC_CONF``.
This module imports nothing from MindSpore: importing it costs nothing before the relaunch.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Dict, Mapping, NamedTuple, Optional

logger = logging.getLogger(__name__)

VARIABLE = "EXVIDEO_MS_ALLOCATOR"
CHOICES = ("jemalloc", "system")
DEFAULT = "jemalloc"
RELAUNCHED = "EXVIDEO_MS_ALLOCATOR_RELAUNCHED"  # set in the relaunched process: never relaunch twice
# jemalloc returns freed pages to the system after 1 s (its default waits 10 s), so the peak a user sees is close
# to what the program holds. Measured on bench_train's mid-size step: exvideo mode peaks at 8.59 GiB with jemalloc's
# default decay, 7.54 with 0 s, 8.69 with glibc; full mode steps in 12.8 s with 0 s (11.84 GiB), 11.76 s with 1 s
# (11.88 GiB), 11.67 s with glibc (13.54 GiB): returning pages at once costs time, after 1 s almost no memory.
JEMALLOC_CONF = "dirty_decay_ms:1000,muzzy_decay_ms:0"
USER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")  # a preload naming one of these is the user's choice
BUNDLED = ("lib", "libjemalloc.so.2")  # inside the mindspore package


class AllocatorError(ValueError):
    """EXVIDEO_MS_ALLOCATOR holds a value this module does not know."""


def bundled_jemalloc() -> Optional[Path]:
    """MindSpore's own libjemalloc.so.2, found without importing MindSpore; None when this wheel has none."""
    spec = importlib.util.find_spec("mindspore")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*BUNDLED)
    return path if path.is_file() else None


def choice(environ: Mapping[str, str]) -> str:
    """The allocator ``environ`` asks for (EXVIDEO_MS_ALLOCATOR, default jemalloc), checked."""
    value = environ.get(VARIABLE, "").strip() or DEFAULT
    if value not in CHOICES:
        raise AllocatorError(f"{VARIABLE}={value!r} is not an allocator this project knows; use one of {CHOICES} "
                             f"(unset: {DEFAULT})")
    return value


class Plan(NamedTuple):
    """What ``relaunch`` does."""

    env: Optional[Dict[str, str]]  # the environment to start the command again with, or None to go on as is
    why: str
    ours: bool  # jemalloc is this project's to load (not the system allocator asked for, not the user's preload)


def plan(environ: Mapping[str, str], library: Optional[Path], platform: str = sys.platform) -> Plan:
    """A pure function of the environment, the bundled library's path and the platform."""
    wanted = choice(environ)
    if wanted == "system":
        return Plan(None, f"system allocator ({VARIABLE}=system)", False)
    preload = environ.get("LD_PRELOAD", "")
    if environ.get(RELAUNCHED):
        return Plan(None, f"relaunched with LD_PRELOAD={preload}", True)
    named = [a for a in USER_ALLOCATORS if a in preload]
    if named:
        return Plan(None, f"the allocator in LD_PRELOAD ({named[0]}), as set", False)
    if not platform.startswith("linux"):
        return Plan(None, f"system allocator (LD_PRELOAD is a Linux mechanism; this is {platform})", True)
    if library is None:
        return Plan(None, ("system allocator: this MindSpore wheel has no mindspore/lib/libjemalloc.so.2 (compiled "
                           "graphs keep about 1.5x the host memory; see exvideo_ms/allocator.py)"), True)
    env = dict(environ)
    env["LD_PRELOAD"] = f"{library}:{preload}" if preload else str(library)
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    env[RELAUNCHED] = "1"
    return Plan(env, f"jemalloc ({library})", True)


def active(maps: str = "/proc/self/maps") -> str:
    """The allocator this process runs with: "jemalloc" when the library is mapped into it (Linux), else
    "system"."""
    try:
        return "jemalloc" if "libjemalloc" in Path(maps).read_text() else "system"
    except OSError:
        return "system"


def relaunch() -> None:
    """Run this command again with jemalloc preloaded, unless ``plan`` says otherwise (then return, with a warning
    naming the reason when jemalloc was wanted but is not loaded).
    Call it first in ``__main__``: everything the process did before is discarded. A bad EXVIDEO_MS_ALLOCATOR
    stops the command with exit code 2 and one line naming it."""
    try:
        env, why, ours = plan(os.environ, bundled_jemalloc())
    except AllocatorError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    if env is None:
        # ours to load but absent: say why (logging is not configured yet, so this reaches stderr through
        # logging's last-resort handler)
        if ours and active() != "jemalloc":
            logger.warning("jemalloc is not loaded (%s); running with the system allocator", why)
        return
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])  # orig_argv: Python >= 3.10
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)
