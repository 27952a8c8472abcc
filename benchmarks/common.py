"""Helpers shared by the benchmarks: isolated worker processes, peak RSS, and the docs/benchmarks.md table."""
from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
RESULTS = REPO / "docs" / "benchmarks.json"  # the newest ratios of each benchmark, read by benchmarks/chart.py
THREADS = 2  # both frameworks get the same number of threads (our CI machine has 2 cores)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def limit_threads() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(THREADS))


def worker_env(allocator: str = "system") -> Dict[str, str]:
    """The environment of a worker process: our thread count, MindSpore's C++ log quiet, and ``allocator``:
    "system" (glibc's; any preload of this shell removed) or "jemalloc" (the preload and settings image_to_video.py
    and train.py relaunch themselves with, exvideo_ms/allocator.py)."""
    from exvideo_ms import allocator as alloc
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "MALLOC_CONF", alloc.VARIABLE, alloc.RELAUNCHED)}
    env.update(OMP_NUM_THREADS=str(THREADS), GLOG_v="3")
    if allocator == "system":
        return env
    planned, why, _ = alloc.plan({**env, alloc.VARIABLE: allocator}, alloc.bundled_jemalloc())
    if planned is None:
        raise RuntimeError(f"cannot run a worker with {allocator}: {why}")
    return planned


def run_worker(module: str, args: Sequence[str], timeout: float = 3600, allocator: str = "system") -> Dict:
    """Run ``python -m module --worker ...`` in a fresh process (so peak RSS is its own) with ``allocator``
    (worker_env) and parse the JSON line it prints last; checks that the worker ran with that allocator."""
    cmd = [sys.executable, "-m", module, "--worker", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=worker_env(allocator), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result.get("allocator") != allocator:
        raise RuntimeError(f"{' '.join(cmd)} ran with the {result.get('allocator')} allocator, not {allocator}")
    return result


def emit(result: Dict) -> None:
    """Print a worker's result as the JSON line run_worker reads, with the allocator the process ran with."""
    from exvideo_ms.allocator import active
    print(json.dumps({**result, "allocator": active()}), flush=True)


def best_of(fn, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn``, after one warm-up call (compilation)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def machine() -> str:
    import mindspore
    try:
        import torch
        tv = torch.__version__
    except ImportError:
        tv = "n/a"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, MindSpore {mindspore.__version__}, torch {tv}, {THREADS} threads each")


def append_section(title: str, lines: List[str]) -> None:
    """Append a dated section to docs/benchmarks.md (creating the file with its header if needed)."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    if not DOC.exists():
        DOC.write_text("# Benchmarks\n\nEvery table below was written by the script it names, which times "
                       "MindSpore and PyTorch in the same run on the same machine. Newest last.\n")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = f"\n## {title} ({stamp})\n\n_{machine()}_\n\n" + "\n".join(lines) + "\n"
    with open(DOC, "a") as f:
        f.write(text)
    print(text)


def record(name: str, metrics: Dict) -> None:
    """Keep the newest figures of benchmark ``name`` in docs/benchmarks.json (for the chart and the summary)."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[name] = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine(), **metrics}
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
