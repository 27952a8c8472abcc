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


def run_worker(module: str, args: Sequence[str], timeout: float = 3600) -> Dict:
    """Run ``python -m module --worker ...`` in a fresh process (so peak RSS is its own) and parse the JSON
    line it prints last."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), GLOG_v="3")
    cmd = [sys.executable, "-m", module, "--worker", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def emit(result: Dict) -> None:
    print(json.dumps(result), flush=True)


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
