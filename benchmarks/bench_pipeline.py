"""The tiny SVD pipeline end to end (64×64, 8 frames, 4 steps, CFG 1.0→2.5): MindSpore vs diffusers.

The tiny model is the test suite's (SVD-XT block structure, small widths, random weights), saved as a
diffusers folder and converted with our converter, so both frameworks run identical weights. Each runs in
its own process; MindSpore in graph mode, where the first call includes graph compilation: MindSpore runs
twice over one compile-cache directory (as image_to_video.py keeps it), the second process finds it warm.

    python -m benchmarks.bench_pipeline [--runs 3]
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import (THREADS, Timer, append_section, emit, limit_threads, peak_rss_gib,
                               record, run_worker)

SIZE, FRAMES, STEPS, CFG = 64, 8, 4, (1.0, 2.5)


def _inputs():
    g = np.random.default_rng(0)
    image = g.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    noise = g.standard_normal((FRAMES, 4, SIZE // 8, SIZE // 8)).astype(np.float32)
    return image, noise


def worker_mindspore(folder: Path, runs: int, cache: Path) -> dict:
    from exvideo_ms.backend import enable_compile_cache, setup_device
    from exvideo_ms.pipeline import SVDPipeline
    setup_device("CPU", mode=0)
    warm = enable_compile_cache(cache)
    pipe = SVDPipeline.from_config(folder.with_suffix(".yaml"), folder.with_suffix(".ckpt"))
    image, noise = _inputs()
    times = []
    for _ in range(runs):
        with Timer() as t:
            frames = pipe(image, num_frames=FRAMES, num_inference_steps=STEPS, min_guidance_scale=CFG[0],
                          max_guidance_scale=CFG[1], noise_aug_strength=0.0, latents=noise, output_type="float",
                          progress=False)
        times.append(t.seconds)
    return dict(framework=f"MindSpore (graph, {'warm' if warm else 'empty'} compile cache)", first=times[0], steady=min(times[1:]), peak_rss=peak_rss_gib(),
                checksum=float(frames.mean()))


def worker_torch(folder: Path, runs: int, cache=None) -> dict:
    import torch
    from PIL import Image

    from tests import references
    torch.set_num_threads(THREADS)
    pipe = references.diffusers_pipeline(folder)
    image, noise = _inputs()
    times = []
    for _ in range(runs):
        with Timer() as t, torch.no_grad():
            frames = pipe(Image.fromarray(image), height=SIZE, width=SIZE, num_frames=FRAMES,
                          num_inference_steps=STEPS, min_guidance_scale=CFG[0], max_guidance_scale=CFG[1],
                          noise_aug_strength=0.0, latents=torch.from_numpy(noise[None]), output_type="np").frames[0]
        times.append(t.seconds)
    return dict(framework="PyTorch (diffusers)", first=times[0], steady=min(times[1:]), peak_rss=peak_rss_gib(),
                checksum=float(frames.mean()))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["ms", "torch"])
    p.add_argument("--folder", type=Path)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    if a.worker:
        limit_threads()
        emit((worker_mindspore if a.worker == "ms" else worker_torch)(a.folder, a.runs, a.folder.parent / "cache"))
        return
    from exvideo_ms.convert.converter import convert
    from tests import references
    with tempfile.TemporaryDirectory() as tmp:
        folder = references.save_diffusers_folder(Path(tmp) / "tiny", *references.tiny_torch_models())
        convert([folder], folder.with_suffix(".ckpt"), progress=False)
        # each side's allocator as its users run it: image_to_video.py relaunches itself with jemalloc
        # (exvideo_ms/allocator.py); PyTorch with glibc's, its default
        res = [run_worker("benchmarks.bench_pipeline", [w, "--folder", str(folder), "--runs", str(a.runs)],
                          allocator="jemalloc" if w == "ms" else "system") for w in ("ms", "ms", "torch")]
    assert res[0]["checksum"] == res[1]["checksum"], res  # the cached graphs compute the same video
    assert abs(res[0]["checksum"] - res[2]["checksum"]) < 1e-3, res  # as diffusers does
    lines = [f"`python -m benchmarks.bench_pipeline` — tiny SVD (test-suite model), {SIZE}×{SIZE}, {FRAMES} frames, "
             f"{STEPS} Euler steps, CFG {CFG[0]}→{CFG[1]} (batched), float32, whole call incl. CLIP, VAE encode "
             f"and decode; steady = best of {a.runs - 1} calls after the first.", "",
             "| framework | allocator | first call (s) | steady call (s) | peak RSS (GiB) |", "|---|---|---|---|---|"]
    for r in res:
        lines.append(f"| {r['framework']} | {r['allocator']} | {r['first']:.2f} | {r['steady']:.3f} | {r['peak_rss']:.2f} |")
    ms_r, warm_r, th_r = res
    lines += ["", f"ratio ms/torch: {ms_r['steady'] / th_r['steady']:.2f}; first call with a warm compile cache "
                  f"{warm_r['first']:.2f} s against {ms_r['first']:.2f} s"]
    append_section("Tiny pipeline end to end", lines)
    record("pipeline", {"time_ratio": ms_r["steady"] / th_r["steady"], "rss_ratio": ms_r["peak_rss"] / th_r["peak_rss"],
                        "ms_first_s": ms_r["first"], "ms_first_cached_s": warm_r["first"],
                        "ms_steady_s": ms_r["steady"], "torch_steady_s": th_r["steady"]})


if __name__ == "__main__":
    main()
