"""Every benchmark in one command, MindSpore and PyTorch side by side, then the chart:

    python -m benchmarks [--only pipeline demo unet long_video train norm geglu allocator]

Each bench appends its table to docs/benchmarks.md and its ratios to docs/benchmarks.json; the chart
(docs/benchmarks.png) and the summary table are drawn from the latter. The whole run takes about an hour
on 2 cores. The per-block profile is separate: python -m benchmarks.profile_unet (about 10 minutes).
"""
import argparse
import subprocess
import sys

from benchmarks import chart
from benchmarks.common import REPO

# benchmarks.bench_<name>, each with its default sizes
BENCHES = ("pipeline", "demo", "unet", "long_video", "train", "norm", "geglu", "allocator")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    a = p.parse_args()
    failed = []
    for name in a.only:
        cmd = [sys.executable, "-m", f"benchmarks.bench_{name}"]
        print("==", " ".join(cmd), flush=True)
        if subprocess.run(cmd, cwd=REPO).returncode != 0:
            failed.append(name)
    chart.main()
    if failed:
        raise SystemExit(f"benchmarks failed: {failed} (their earlier figures, if any, stay in the chart)")


if __name__ == "__main__":
    main()
