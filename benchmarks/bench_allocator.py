"""The host allocator's share of MindSpore's memory and compile time (issue 23): glibc's against the jemalloc that
MindSpore's wheel ships, which image_to_video.py and train.py now preload (exvideo_ms/allocator.py).

Measured, each in its own process, under both allocators:

- the mid-size UNet's forward graph: memory kept after compiling (benchmarks/graph_memory.py's worker, width 64);
- bench_train's mid-size step (exvideo mode, 8 frames, 128×128): first step, steady step, peak RSS; PyTorch's too,
  so that the comparison with it can be read with either allocator on its side;
- README's first command with the compile cache off (a cold start): wall time and peak RSS of the command,
  ``EXVIDEO_MS_ALLOCATOR=system`` against the default; the allocator is read back from the command's sidecar.

    python -m benchmarks.bench_allocator
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, Timer, append_section, emit, limit_threads, run_worker, worker_env

ALLOCATORS = ("system", "jemalloc")
README_COMMAND = ["image_to_video.py", "--config", "configs/demo/i2v.yaml", "--compile_cache", "null"]
STEP = ["--steps", "3", "--frames", "8", "--size", "16", "--modes", "exvideo"]  # bench_train's defaults


def worker_readme(allocator: str) -> dict:
    """README's first command in a child process: its wall time, peak RSS and the allocator its sidecar names."""
    env = {k: v for k, v in worker_env("system").items() if k != "OMP_NUM_THREADS"}  # as a user's shell has it
    if allocator == "system":
        env["EXVIDEO_MS_ALLOCATOR"] = "system"
    with tempfile.TemporaryDirectory() as out:
        with Timer() as t:
            proc = subprocess.run([sys.executable, *README_COMMAND, "--output_dir", out], cwd=REPO, env=env,
                                  capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"README's command failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        sidecar = json.loads(next(Path(out).glob("*.json")).read_text())
    return dict(seconds=t.seconds, peak_rss=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20,
                command_allocator=sidecar["allocator"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["readme"])
    p.add_argument("--allocator", choices=ALLOCATORS)
    a = p.parse_args()
    if a.worker:
        limit_threads()
        emit(worker_readme(a.allocator))
        return
    graph, ms, torch, readme = {}, {}, {}, {}
    for alloc in ALLOCATORS:  # one allocator after the other, each measurement in a fresh process
        graph[alloc] = run_worker("benchmarks.graph_memory", ["unet", "--width", "64", "--memory_level", "O0"],
                                  allocator=alloc)
        ms[alloc] = run_worker("benchmarks.bench_train", ["ms", *STEP], timeout=7200, allocator=alloc)
        torch[alloc] = run_worker("benchmarks.bench_train", ["torch", *STEP], timeout=7200, allocator=alloc)
        readme[alloc] = run_worker("benchmarks.bench_allocator", ["readme", "--allocator", alloc])
        if readme[alloc]["command_allocator"] != alloc:
            raise RuntimeError(f"README's command ran with {readme[alloc]['command_allocator']}, not {alloc}")

    def row(name, values, digits, with_torch=None):
        s, j = values["system"], values["jemalloc"]
        cells = f"| {name} | {s:.{digits}f} | {j:.{digits}f} | {j / s:.2f} |"
        if with_torch is None:
            return cells + " — | — |"
        return cells + f" {with_torch['system']:.{digits}f} | {with_torch['jemalloc']:.{digits}f} |"

    def pick(results, key):
        return {k: v[key] for k, v in results.items()}

    lines = ["`python -m benchmarks.bench_allocator` — glibc's allocator against MindSpore's bundled jemalloc "
             "(mindspore/lib/libjemalloc.so.2, MALLOC_CONF as exvideo_ms/allocator.py sets it), each measurement in "
             "a fresh process. Graph: benchmarks/graph_memory.py's UNet forward (width 64, 2 frames). Step: "
             "bench_train's mid-size exvideo step (8 frames, 128×128, recompute; steady = mean of steps 2..3). "
             "README: its first command, compile cache off (cold), as a user runs it.", "",
             "| measure | MindSpore, glibc | MindSpore, jemalloc | jemalloc ÷ glibc | PyTorch, glibc | "
             "PyTorch, jemalloc |",
             "|---|---|---|---|---|---|",
             row("graph kept after compiling (MiB)", pick(graph, "compiled_mib"), 0),
             row("train step: peak RSS (GiB)", pick(ms, "peak_rss"), 2, pick(torch, "peak_rss")),
             row("train step: first step (s)", pick(ms, "first"), 1, pick(torch, "first")),
             row("train step: steady step (s)", pick(ms, "steady"), 2, pick(torch, "steady")),
             row("README's first command, cold: wall time (s)", pick(readme, "seconds"), 1),
             row("README's first command, cold: peak RSS (GiB)", pick(readme, "peak_rss"), 2), ""]
    for side in ALLOCATORS:
        lines.append(f"MindSpore with jemalloc ÷ PyTorch with {side}: step time "
                     f"{ms['jemalloc']['steady'] / torch[side]['steady']:.2f}, peak RSS "
                     f"{ms['jemalloc']['peak_rss'] / torch[side]['peak_rss']:.2f}")
    append_section("Host allocator: glibc against jemalloc", lines)


if __name__ == "__main__":
    os.environ.setdefault("GLOG_v", "3")
    main()
