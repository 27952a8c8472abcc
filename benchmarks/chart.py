"""Draw docs/benchmarks.png and the summary table at the top of docs/benchmarks.md: every target of the
performance issue as a MindSpore ÷ PyTorch ratio (time and peak RSS; lower is better, 1.0 = parity) plus the
long-video cost growth, the first measurement (the oldest section of docs/benchmarks.md) beside the newest
(docs/benchmarks.json, or the newest section), each with its target line; and the table of issue 23's targets
(the training step, compilation, README's command), its newest figures from docs/benchmarks.json.

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


def draw(before: dict, after: dict, path) -> list:
    """Grouped bars: the first measurement of each target (grey) and the newest (green when it meets the
    target, red otherwise), with the target as a dashed line. Returns the labels not measured yet."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bars = [(label, before.get(b, {}).get(m), after[b][m], target) for b, m, label, target in BARS
            if b in after and m in after[b]]
    missing = [label.replace("\n", " ") for b, m, label, _ in BARS if b not in after or m not in after[b]]
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for i, (label, old, value, target) in enumerate(bars):
        if old is not None and old != value:
            ax.bar(i - 0.18, old, color="0.75", width=0.36)
            ax.text(i - 0.18, old, f"{old:.2f}", ha="center", va="bottom", fontsize=8, color="0.4")
            x = i + 0.18
        else:
            x = i
        ax.bar(x, value, color="tab:green" if value <= target else "tab:red", width=0.36)
        ax.text(x, value, f"{value:.2f}", ha="center", va="bottom", fontsize=9)
        ax.hlines(target, i - 0.4, i + 0.4, colors="black", linestyles="--", linewidth=1)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set_ylabel("MindSpore ÷ PyTorch (lower is better)")
    ax.set_title("exvideo-ms against PyTorch on the same CPU: first measurement (grey), newest (colour), "
                 "target (dashed)" + (f"; not measured: {', '.join(missing)}" if missing else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return missing


# (record in docs/benchmarks.json, metric, label, before, target): the targets of issue 23, each "before" the first
# figure given for it: issue 23's text for the first step (128 s), README's command (36 s) and the tiny pipeline
# (2.3); the first fair bench_train section (2026-12-03 23:52) for the train step's ratios
ISSUE_23 = (("train", "time_ratio", "train step time ÷ PyTorch's, exvideo mode", 1.30, 1.5),
            ("train_full", "time_ratio", "train step time ÷ PyTorch's, full mode", 1.24, 1.5),
            ("train", "rss_ratio", "train step peak RSS ÷ PyTorch's, exvideo mode", 1.51, 1.2),
            ("train_full", "rss_ratio", "train step peak RSS ÷ PyTorch's, full mode", 1.51, 1.2),
            ("train_compile_cache", "precompiled_rss_ratio",
             "the same, exvideo mode, compiled first in its own process (`--environment.precompile`)", 1.51, 1.2),
            ("train_compile_cache_full", "precompiled_rss_ratio",
             "the same, full mode, compiled first in its own process", 1.51, 1.2),
            ("train", "ms_first_s", "first train step (compilation), exvideo mode (s)", 128.0, 64.0),
            ("train_compile_cache", "warm_first_s", "the same over a warm compile cache (s)", 128.0, 64.0),
            ("demo", "cold_s", "README's first command with an empty compile cache (s)", 36.0, 20.0),
            ("pipeline", "time_ratio", "tiny pipeline steady call ÷ PyTorch's", 2.3, 1.5))


def _target_row(label: str, old, new, target: float, *extra: str) -> str:
    """One row of a targets table: label, the figure it started from, the newest, the target, met or not, and
    ``extra`` cells (each "–" when nothing is measured)."""
    if new is None:
        cells = (label, "–" if old is None else old, "not measured", f"≤ {target}", "–", *("–" for _ in extra))
    else:
        cells = (label, "–" if old is None else old, round(new, 2), f"≤ {target}", "yes" if new <= target else "no",
                 *extra)
    return "| " + " | ".join(str(c) for c in cells) + " |"


def issue_23_summary(after: dict) -> str:
    """Issue 23's targets: the figure each started from, the newest in docs/benchmarks.json, and when it was
    measured (written between the ISSUE_23_SUMMARY markers of docs/benchmarks.md)."""
    rows = ["| target | before | newest | target | met | measured |", "|---|---|---|---|---|---|"]
    for name, metric, label, old, target in ISSUE_23:
        rows.append(_target_row(label, old, after.get(name, {}).get(metric), target, after.get(name, {}).get("date")))
    return "\n".join(rows)


def summary(before: dict, after: dict) -> str:
    """The before/after table of every target, as written between the SUMMARY markers of docs/benchmarks.md."""
    rows = ["| target | first measured | newest | target | met |", "|---|---|---|---|---|"]
    for b, m, label, target in BARS:
        rows.append(_target_row(label.replace("\n", " "), before.get(b, {}).get(m), after.get(b, {}).get(m), target))
    return "\n".join(rows)


SUMMARY = "<!-- summary: written by python -m benchmarks.chart -->", "<!-- /summary -->"
ISSUE_23_SUMMARY = "<!-- issue 23 summary: written by python -m benchmarks.chart -->", "<!-- /issue 23 summary -->"


def write_summary(text: str, markers=SUMMARY) -> None:
    """Replace what lies between ``markers`` in docs/benchmarks.md with ``text``."""
    start, end = markers
    doc = DOC.read_text()
    if start not in doc:
        raise SystemExit(f"{DOC} has no {start!r} marker to write the summary after")
    head, rest = doc.split(start, 1)
    tail = rest.split(end, 1)[1] if end in rest else rest
    DOC.write_text(f"{head}{start}\n{text}\n{end}{tail}")


# docs/benchmarks.md section titles of the benchmarks that record into docs/benchmarks.json only since it exists
SECTIONS = {"unet": "UNet forward, full size", "pipeline": "Tiny pipeline end to end",
            "long_video": "Long video: cost per frame", "train": "Training step, mid-size, ExVideo mode"}


def from_doc(which: int = -1) -> dict:
    """Ratios of one section of each benchmark in docs/benchmarks.md (``which``: -1 the newest, 0 the first),
    each with the section it came from."""
    import re
    parts = re.split(r"^## ", DOC.read_text() if DOC.exists() else "", flags=re.M)
    out = {}
    for name, title in SECTIONS.items():
        found = [p for p in parts if p.startswith(title + " (")]
        if not found:
            continue
        sec = found[which]
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
    after = from_doc(-1)
    if RESULTS.exists():
        after.update(json.loads(RESULTS.read_text()))  # figures recorded by a newer run win
    if not after:
        raise SystemExit(f"no figures in {RESULTS} or {DOC}: run python -m benchmarks first")
    before = from_doc(0)
    path = DOC.parent / "benchmarks.png"
    missing = draw(before, after, path)
    write_summary(summary(before, after))
    write_summary(issue_23_summary(after), ISSUE_23_SUMMARY)
    print(f"wrote {path} and the summary in {DOC}" + (f" (not measured yet: {missing})" if missing else ""))


if __name__ == "__main__":
    main()
