"""Step log (JSON lines, rank 0 only) and the loss-curve plot."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List


class StepLog:
    FIELDS = ("step", "loss", "weighted_loss", "sigma", "lr", "loss_scale", "overflow", "step_time",
              "samples_per_s", "skipped_clips")

    def __init__(self, path: Path, enabled: bool):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def truncate_after(self, step: int) -> None:
        """On resume: drop records of steps that will be redone."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))


def read_log(path: Path) -> List[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_loss(log_path: Path, png_path: Path, title: str = "training loss") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    records = [r for r in read_log(log_path) if not r.get("overflow")]
    if not records:
        return
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("loss", "x0 MSE"), ("weighted_loss", "weighted (back-propagated)")):
        values = [r[key] for r in records]
        ax.plot(steps, values, alpha=0.35, lw=0.8)
        window = max(1, len(values) // 50)
        smooth = [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
                  for i in range(len(values))]
        ax.plot(steps, smooth, label=f"{label} (mean of {window})")
    ax.set(xlabel="step", ylabel="loss", yscale="log", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = Path(png_path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(png_path)
