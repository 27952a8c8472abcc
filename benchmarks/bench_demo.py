"""README's first command (the bundled demo model, 32 frames, graph mode) end to end, each run a fresh process
as a user starts it: with an empty compile cache, then over the cache that run wrote, then (``--pynative``)
in PyNative mode, which compiles nothing. Per run: the wall time from start to exit, the peak RSS, and the
phases image_to_video.py writes into its JSON sidecar (conditioning, sampling, decoding and writing); the
rest of the wall time is start-up (Python, MindSpore, the allocator's relaunch, building and loading the model).

Issue 23's target for this command is absolute (under 20 s with an empty cache on 2 cores), so there is no
PyTorch side here.

    python -m benchmarks.bench_demo [--pynative]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, append_section, record, worker_env

COMMAND = ["image_to_video.py", "--config", "configs/demo/i2v.yaml"]  # README's first command
PHASES = (("conditioning_s", "conditioning"), ("sampling_s", "sampling"),
          ("decoding_and_writing_s", "decoding and writing"))


def run(output_dir: Path, *extra: str) -> dict:
    """One run of README's command in a fresh process (it relaunches itself with jemalloc, as for users);
    wall time, peak RSS (of the process, across its relaunch) and its sidecar's phases."""
    cmd = [sys.executable, *COMMAND, "--output_dir", str(output_dir), *extra]
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: nothing is read until the process ends
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=worker_env("system"), stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)  # the process's own peak RSS, which Popen.wait does not give
        wall = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must know it ended
        if code != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{log.read()[-4000:]}")
    sidecars = list(output_dir.glob("*.json"))
    if len(sidecars) != 1:
        raise RuntimeError(f"{' '.join(cmd)} left {len(sidecars)} sidecars in {output_dir}, expected 1")
    sidecar = json.loads(sidecars[0].read_text())
    timings = sidecar["settings"]["timings"]
    return dict(wall=wall, peak_rss=usage.ru_maxrss / 2 ** 20, mp4=Path(sidecar["outputs"]["mp4"]).read_bytes(),
                allocator=sidecar["allocator"], **{key: timings[key] for key, _ in PHASES})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pynative", action="store_true", help="also run the command in PyNative mode (--mode 1)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = ["--compile_cache", str(tmp / "cache")]
        runs = {"graph, empty compile cache": run(tmp / "cold", *cache),
                "graph, over the cache the first run wrote": run(tmp / "warm", *cache)}
        if a.pynative:
            runs["PyNative (nothing to compile)"] = run(tmp / "pynative", "--mode", "1")
    cold, warm = runs["graph, empty compile cache"], runs["graph, over the cache the first run wrote"]
    assert cold["mp4"] == warm["mp4"], "the cached graphs made another video"
    lines = [f"`python -m benchmarks.bench_demo{' --pynative' if a.pynative else ''}` — README's first command "
             f"(`{' '.join(COMMAND)}`: the bundled demo, 32 frames at its size, 12 Euler steps), each run a fresh "
             "process; wall time from start to exit; phases from the command's JSON sidecar, start-up (Python, "
             "MindSpore, the allocator's relaunch, building and loading the model) is the rest. Both graph-mode "
             "runs wrote the same MP4 byte for byte. Issue 23's target: under 20 s with an empty cache.", "",
             "| run | allocator | wall (s) | start-up (s) | " + " | ".join(f"{label} (s)" for _, label in PHASES)
             + " | peak RSS (GiB) |", "|---" * (5 + len(PHASES)) + "|"]
    for name, r in runs.items():
        startup = r["wall"] - sum(r[key] for key, _ in PHASES)
        lines.append(f"| {name} | {r['allocator']} | {r['wall']:.1f} | {startup:.1f} | "
                     + " | ".join(f"{r[key]:.1f}" for key, _ in PHASES) + f" | {r['peak_rss']:.2f} |")
    append_section("README's first command", lines)
    figures = {"cold_s": cold["wall"], "warm_s": warm["wall"], "cold_peak_rss_gib": cold["peak_rss"],
               "warm_peak_rss_gib": warm["peak_rss"]}
    if a.pynative:
        figures["pynative_s"] = runs["PyNative (nothing to compile)"]["wall"]
    record("demo", figures)


if __name__ == "__main__":
    main()
