"""Draw docs/benchmarks.png from docs/benchmarks.json: every target of the performance issue as a MindSpore ÷
PyTorch ratio (time and peak RSS; lower is better, 1.0 = parity) plus the long-video cost growth, each with its
target line.

    python -m benchmarks.chart
"""
import json

from benchmarks.common import DOC, RESULTS

# (benchmark, metric, label, target): the targets of issue 7
BARS = (("unet", "time_ratio", "UNet forward\ntime", 1.0), ("unet", "rss_ratio", "UNet forward\npeak RSS", 1.0),
        ("pipeline", "time_ratio", "tiny pipeline\ntime", 1.0),
        ("train", "time_ratio", "train step\ntime", 1.0), ("train", "rss_ratio", "train step\npeak RSS", 1.0),
        ("long_video", "time_ratio", "128 frames\ntime", 1.0),
        ("long_video", "per_frame_growth", "s/frame 128 ÷ 16\n(MindSpore)", 1.15))


def draw(results: dict, path) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bars = [(label, results[b][m], target) for b, m, label, target in BARS if b in results and m in results[b]]
    missing = [label.replace("\n", " ") for b, m, label, _ in BARS if b not in results or m not in results[b]]
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for i, (label, value, target) in enumerate(bars):
        ax.bar(i, value, color="tab:green" if value <= target else "tab:red", width=0.6)
        ax.hlines(target, i - 0.4, i + 0.4, colors="black", linestyles="--", linewidth=1)
        ax.text(i, value, f"{value:.2f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set_ylabel("MindSpore ÷ PyTorch (lower is better)")
    ax.set_title("exvideo-ms against PyTorch on the same CPU (dashed: target)"
                 + (f"; not measured: {', '.join(missing)}" if missing else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return missing


# docs/benchmarks.md section titles of the benchmarks that record into docs/benchmarks.json only since it exists
SECTIONS = {"unet": "UNet forward, full size", "pipeline": "Tiny pipeline end to end",
            "long_video": "Long video: cost per frame", "train": "Training step, mid-size, ExVideo mode"}


def from_doc() -> dict:
    """Ratios of the newest section of each benchmark in docs/benchmarks.md (tables the bench scripts wrote
    before docs/benchmarks.json existed), each with the section it came from."""
    import re
    text = DOC.read_text() if DOC.exists() else ""
    out = {}
    for name, title in SECTIONS.items():
        parts = re.split(r"^## ", text, flags=re.M)
        found = [p for p in parts if p.startswith(title + " (")]
        if not found:
            continue
        sec = found[-1]
        r = {"source": "docs/benchmarks.md: " + sec.splitlines()[0]}
        for key, pattern in (("time_ratio", r"^ratio ms/torch(?: at \d+ frames)?: ([\d.]+)"),
                             ("rss_ratio", r"^RSS ratio ms/torch: ([\d.]+)"),
                             ("per_frame_growth", r"÷ cost/frame\(\d+\): ([\d.]+)")):
            m = re.search(pattern, sec, flags=re.M)
            if m:
                r[key] = float(m.group(1))
        out[name] = r
    return out


def main():
    results = from_doc()
    if RESULTS.exists():
        results.update(json.loads(RESULTS.read_text()))  # figures recorded by a newer run win
    if not results:
        raise SystemExit(f"no figures in {RESULTS} or {DOC}: run python -m benchmarks first")
    path = DOC.parent / "benchmarks.png"
    missing = draw(results, path)
    print(f"wrote {path}" + (f" (not measured yet: {missing})" if missing else ""))


if __name__ == "__main__":
    main()
