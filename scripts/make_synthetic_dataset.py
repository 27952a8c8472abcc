"""Procedurally generated video clips for training and testing: coloured shapes that move, bounce, turn
and scale over textured backgrounds, some with a camera pan. Deterministic from --seed.

    python scripts/make_synthetic_dataset.py --output data/synthetic --clips 200 --heldout 16 \
        --frames 32 --size 64 [--csv] [--frame-folders]

Writes <output>/train/{videos/*.mp4, metadata.json} and <output>/heldout/... (ExVideo's metadata.json
layout); with --csv also mindone's metadata.csv (path,length,motion_bucket_id); with --frame-folders also
one folder of PNG frames per clip (frames/<clip>/0000.png ...), the third layout the loaders read. Every clip
also gets masks/<clip>.npz: ``labels`` (T, H, W) uint8, 0 for the background and k for the k-th object where
it is drawn (later objects cover earlier ones, as in the frames), and ``colors`` (K, 3) uint8 RGB, so that
evaluation can look at the objects (exvideo_ms/evaluation.py). <output>/generator.json keeps the options that made
the dataset (every option but --output and --overwrite), so that a model card can say what its model was trained
on. An --output that already holds a dataset (train/, heldout/ or generator.json) is refused unless --overwrite,
which replaces it.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np

SHAPES = ("circle", "square", "triangle", "star")
GENERATOR_FILE = "generator.json"  # in --output: the options that made the dataset
OBJECT_RADIUS = (0.08, 0.18)  # default --object-radius: each object's radius, fraction of the side (before pulsing)
MOTIONS = ("mixed", "orbit")  # --motion: mixed = drift, bounce, turn, pulse, pans; orbit = a new kind (the demo LoRA)
ORBIT_RADIUS = (0.15, 0.3)  # orbit: distance of each object from the frame centre, fraction of the side
ORBIT_SPEED = (0.3, 0.5)  # orbit: radians per frame, one speed and sense per clip (all objects turn together)
# together 3-10 px per frame at 64², beyond the mixed kind's drift (at most 2.5 per axis): slower orbits (0.12-0.25 rad,
# radius 0.12-0.25) were predicted by the demo's base model as well as its own data, so no LoRA could learn them


def background(rng: np.random.Generator, size: int, pad: int) -> np.ndarray:
    """A smooth two-colour gradient with soft blobs and fine stripes, larger than the frame (for pans)."""
    n = size + 2 * pad
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    c0, c1 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    angle = rng.uniform(0, 2 * math.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    for _ in range(rng.integers(2, 5)):
        cx, cy, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.1, 0.3)]
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - 0.4 * blob) + 0.4 * blob * rng.uniform(0, 1, 3)[None, None]
    freq, phase = rng.uniform(8, 20), rng.uniform(0, 2 * math.pi)
    img += 0.05 * np.sin(2 * math.pi * freq * (xx * np.cos(angle + 1) + yy * np.sin(angle + 1)) + phase)[..., None]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def shape_points(kind: str, cx: float, cy: float, r: float, rot: float) -> np.ndarray:
    if kind == "square":
        ang = [rot + math.pi / 4 + i * math.pi / 2 for i in range(4)]
        return np.array([[cx + r * math.cos(a), cy + r * math.sin(a)] for a in ang])
    if kind == "triangle":
        ang = [rot + i * 2 * math.pi / 3 for i in range(3)]
        return np.array([[cx + r * math.cos(a), cy + r * math.sin(a)] for a in ang])
    pts = []  # star
    for i in range(10):
        a = rot + i * math.pi / 5
        rr = r if i % 2 == 0 else 0.45 * r
        pts.append([cx + rr * math.cos(a), cy + rr * math.sin(a)])
    return np.array(pts)


def draw(canvas: np.ndarray, o: dict, r: float, value, antialiased: bool) -> None:
    """Object ``o`` of radius ``r`` at its position into ``canvas`` (a frame, or a label map without
    antialiasing: the pixels whose centre the shape covers)."""
    line = cv2.LINE_AA if antialiased else cv2.LINE_8
    cx, cy = o["pos"]
    if o["kind"] == "circle":
        cv2.circle(canvas, (int(round(cx * 16)), int(round(cy * 16))), int(round(r * 16)), value, -1,
                   lineType=line, shift=4)
    else:
        pts = np.round(shape_points(o["kind"], cx, cy, r, o["rot"]) * 16).astype(np.int32)
        cv2.fillPoly(canvas, [pts], value, lineType=line, shift=4)


def render_clip(rng: np.random.Generator, frames: int, size: int, motion: str = "mixed",
                radius: tuple = OBJECT_RADIUS, drift: float = 1.0, pans: bool = True):
    """(T, size, size, 3) uint8 RGB frames, (T, size, size) uint8 object labels, (K, 3) uint8 object colours.
    ``motion`` "orbit": no pan, every object circles the frame centre at one angular speed per clip (turning and
    pulsing as in "mixed"), instead of drifting and bouncing. ``radius``: the range of the objects' radii, fractions
    of ``size`` (the same random draws for any range, so only the sizes and what follows from them change).
    ``drift`` scales every object's drift velocity (0: objects turn and pulse in place) and ``pans=False`` keeps the
    camera still, again with the same random draws, so a clip's first frame does not change (mixed kind only)."""
    pad = size // 2
    bg = background(rng, size, pad)
    pan = rng.uniform(-1.2, 1.2, 2) if rng.random() < 0.4 else np.zeros(2)
    objects = []
    for _ in range(rng.integers(1, 4)):
        objects.append(dict(kind=SHAPES[rng.integers(len(SHAPES))], pos=rng.uniform(0.2, 0.8, 2) * size,
                            vel=rng.uniform(-2.5, 2.5, 2) * size / 64, r=rng.uniform(*radius) * size,
                            spin=rng.uniform(-0.25, 0.25), rot=rng.uniform(0, 2 * math.pi),
                            pulse=rng.uniform(0, 0.3), phase=rng.uniform(0, 2 * math.pi),
                            color=tuple(int(c) for c in rng.integers(20, 255, 3))))
        objects[-1]["vel"] *= drift
    if not pans or motion == "orbit":
        pan[:] = 0.0
    if motion == "orbit":  # drawn after the mixed kind's numbers, which stay as they were
        speed = rng.uniform(*ORBIT_SPEED) * rng.choice([-1.0, 1.0])
        for o in objects:
            o["orbit"] = (rng.uniform(*ORBIT_RADIUS) * size, rng.uniform(0, 2 * math.pi), speed)
    out = np.empty((frames, size, size, 3), np.uint8)
    labels = np.zeros((frames, size, size), np.uint8)
    for t in range(frames):
        off = np.clip(pad + pan * t, 0, 2 * pad).astype(int)
        frame = np.ascontiguousarray(bg[off[1]:off[1] + size, off[0]:off[0] + size])
        for k, o in enumerate(objects, 1):
            r = o["r"] * (1 + o["pulse"] * math.sin(0.4 * t + o["phase"]))
            if "orbit" in o:
                radius, angle, speed = o["orbit"]
                o["pos"] = size / 2 + radius * np.array([math.cos(angle + speed * t), math.sin(angle + speed * t)])
            for axis in (0, 1):  # bounce off the frame border (an orbit is only kept inside)
                if not r <= o["pos"][axis] <= size - r:
                    o["vel"][axis] = -o["vel"][axis]
                    o["pos"][axis] = float(np.clip(o["pos"][axis], r, size - r))
            draw(frame, o, r, o["color"], antialiased=True)
            draw(labels[t], o, r, k, antialiased=False)
            o["pos"] = o["pos"] + o["vel"]
            o["rot"] += o["spin"]
        out[t] = frame
    return out, labels, np.asarray([o["color"] for o in objects], np.uint8)


def write_split(root: Path, rng: np.random.Generator, clips: int, frames: int, size: int, fps: float,
                with_csv: bool, with_folders: bool, motion: str = "mixed", radius: tuple = OBJECT_RADIUS,
                drift: float = 1.0, pans: bool = True) -> list:
    from exvideo_ms.data.motion import motion_bucket
    from exvideo_ms.models.conditioner import to_model_range
    from exvideo_ms.media import write_mp4
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    entries, rows = [], []
    for i in range(clips):
        video, labels, colors = render_clip(rng, frames, size, motion, radius, drift, pans)
        rel = f"videos/clip_{i:05d}.mp4"
        write_mp4(video, root / rel, fps)
        np.savez_compressed(root / "masks" / f"clip_{i:05d}.npz", labels=labels, colors=colors)
        entries.append({"path": rel})
        rows.append({"path": rel, "length": frames, "motion_bucket_id": motion_bucket(to_model_range(video))})
        if with_folders:
            folder = root / "frames" / f"clip_{i:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            for t, f in enumerate(video):
                cv2.imwrite(str(folder / f"{t:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (root / "metadata.json").write_text(json.dumps(entries, indent=1))
    if with_csv:
        with open(root / "metadata.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["path", "length", "motion_bucket_id"])
            w.writeheader()
            w.writerows(rows)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True)
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--heldout", type=int, default=16)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", action="store_true")
    p.add_argument("--frame-folders", action="store_true")
    p.add_argument("--motion", choices=MOTIONS, default="mixed",
                   help="mixed: objects drift, bounce, turn and pulse, some clips pan; orbit: objects circle the "
                        "frame centre together, no pan (a motion kind the mixed data lacks, for the demo LoRA)")
    p.add_argument("--object-radius", type=float, nargs=2, default=OBJECT_RADIUS, metavar=("MIN", "MAX"),
                   help="range of the objects' radii as fractions of the frame side (default %(default)s; a star or "
                        "triangle covers about 1.3 r^2, a circle 3.1 r^2)")
    p.add_argument("--drift", type=float, default=1.0, metavar="SCALE",
                   help="mixed kind: scale every object's drift velocity (default 1: up to 2.5 px per frame per axis "
                        "at 64 px; 0: objects turn and pulse in place); the clips' first frames do not change")
    p.add_argument("--no-pan", action="store_true", help="mixed kind: no camera pans (by default 40%% of clips pan)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the dataset already in --output (its train/, heldout/ and generator.json)")
    a = p.parse_args(argv)
    if not a.drift >= 0:
        p.error(f"--drift {a.drift}: expected SCALE >= 0 (a multiple of the mixed kind's drift)")
    if a.motion != "mixed" and (a.drift != 1 or a.no_pan):
        p.error(f"--drift and --no-pan change the mixed kind's motion; --motion {a.motion} has its own")
    lo, hi = a.object_radius
    if not 0 < lo <= hi <= 0.5:
        p.error(f"--object-radius {lo} {hi}: expected 0 < MIN <= MAX <= 0.5 (fractions of the frame side)")
    out = Path(a.output)
    existing = [out / name for name in ("train", "heldout", GENERATOR_FILE) if (out / name).exists()]
    if existing and not a.overwrite:
        p.error(f"--output {out} already holds a dataset ({', '.join(x.name for x in existing)}): pass --overwrite to "
                f"replace it, or choose another folder")
    for old in existing:
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in vars(a).items() if k not in ("output", "overwrite")}
    (out / GENERATOR_FILE).write_text(json.dumps(options, indent=1))
    for split, n, stream in (("train", a.clips, 0), ("heldout", a.heldout, 1)):
        if n > 0:
            write_split(out / split, np.random.default_rng([a.seed, stream]), n, a.frames, a.size, a.fps, a.csv,
                        a.frame_folders, a.motion, (lo, hi), a.drift, not a.no_pan)
    print(f"wrote {a.clips} training and {a.heldout} held-out clips of {a.frames} frames at {a.size}x{a.size} to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
