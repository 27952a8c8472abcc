"""ZeRO stages 0-2 (exvideo_ms/train/zero.py): the slicing arithmetic exactly, and two msrun CPU workers at
batch 1 against one process at batch 2 through the real TrainStep / AdamW / EMA / TrainingState
(tests/zero_worker.py): weights, both AdamW moments, EMA, loss scale and losses after a step whose gradient
is NaN on rank 1 only and with clipping active; resume 2 → 2, 2 → 1 and 1 → 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exvideo_ms.train.zero import GradientSync, Layout

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import zero_worker  # noqa: E402


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("shape", [(5, 3), (1,), (4,), (2, 3, 7)])
def test_slices_cover_every_element_once(world, shape):
    full = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1
    slices = [Layout(1, r, world).own_slice(full) for r in range(world)]
    size = -(-full.size // world)
    assert all(s.shape == ((size,) if world > 1 else shape) for s in slices)
    assert Layout(1, 0, world).held_shape(shape) == slices[0].shape
    if world > 1:
        joined = np.concatenate(slices)
        assert np.all(joined[full.size:] == 0)  # padding only at the end
        np.testing.assert_array_equal(Layout(1, 0, world).whole(joined, shape), full)


def test_stage_zero_holds_whole_tensors_and_bad_layouts_are_named():
    assert Layout(0, 1, 2).held_shape((5, 3)) == (5, 3) and not Layout(0, 1, 2).sharded
    assert Layout(2, 0, 1).held_shape((5, 3)) == (5, 3)  # one rank: nothing to shard
    with pytest.raises(ValueError, match="zero_stage must be one of"):
        Layout(3, 0, 2)
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        Layout(1, 2, 2)


def test_overflow_flag_matches_an_element_wise_check():
    """GradientSync.all_finite sums each gradient instead of testing each element: the same verdict as NumPy's
    element-wise test for inf, -inf and NaN anywhere (+inf and -inf in different tensors sum to NaN), and
    conservative when finite gradients sum past float32's range."""
    import mindspore as ms
    g = np.random.default_rng(0)
    grads = [g.standard_normal(s).astype(np.float32) * 1e30 for s in ((3, 4), (7,), (2, 2, 5))]
    sync = GradientSync(Layout())
    cases = {"finite": {}, "+inf": {0: (1, 2, np.inf)}, "-inf": {2: (1, 1, 4, -np.inf)}, "nan": {1: (6, np.nan)},
             "+inf and -inf": {0: (0, 0, np.inf), 1: (3, -np.inf)}}
    for name, bad in cases.items():
        tensors = [x.copy() for x in grads]
        for i, (*index, value) in bad.items():
            tensors[i][tuple(index)] = value
        expected = all(np.isfinite(x).all() for x in tensors)
        assert bool(sync.all_finite(tuple(ms.Tensor(x) for x in tensors)).asnumpy()) == expected, name
    huge = tuple(ms.Tensor(np.full((2,), 3e38, np.float32)) for _ in range(2))
    assert not bool(sync.all_finite(huge).asnumpy())  # every element finite, the sum is not: skipped as overflow


def _single(out: Path, *extra) -> None:
    r = subprocess.run([sys.executable, str(REPO / "tests" / "zero_worker.py"), str(out), *extra],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def _two_workers(out: Path, logs: Path, *extra) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    msrun = str(Path(sys.executable).with_name("msrun"))
    r = subprocess.run([msrun, "--worker_num=2", "--local_worker_num=2", f"--master_port={8700 + os.getpid() % 200}",
                        f"--log_dir={logs}", "--join=True", str(REPO / "tests" / "zero_worker.py"), str(out),
                        "--distributed", *extra], env=env, capture_output=True, text=True, timeout=900, cwd=out.parent)
    text = "\n".join(p.read_text() for p in logs.glob("*.log"))
    assert r.returncode == 0, (r.stderr[-2000:], text[-4000:])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero")
    _single(root / "one")
    _two_workers(root / "two", root / "logs_two", "--resume-from", str(root / "one"), str(root / "one_to_two"),
                 "--resume-from", str(root / "two"), str(root / "two_to_two"))
    _single(root / "two_to_one", "--skip-fresh", "--resume-from", str(root / "two"), str(root / "two_to_one"))
    return root


def _state(path: Path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _log(root: Path, case: str, rank: int) -> dict:
    return json.loads((root / f"{case}_rank{rank}.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("case", list(zero_worker.CASES))
def test_two_workers_equal_one_process(runs, case):
    for at in (zero_worker.RESUME_AT, zero_worker.STEPS):
        one, two = _state(runs / "one" / f"{case}_at{at}.npz"), _state(runs / "two" / f"{case}_at{at}.npz")
        assert one.keys() == two.keys()
        assert any(k.startswith("optimizer/exp_avg_sq.") for k in two) and any(k.startswith("ema/") for k in two)
        for k in one:
            assert two[k].shape == one[k].shape, k  # whole tensors, the unsharded layout
            np.testing.assert_allclose(two[k], one[k], rtol=0, atol=1e-6, err_msg=f"{case} step {at}: {k}")
    single, ranks = _log(runs / "one", case, 0), [_log(runs / "two", case, r) for r in (0, 1)]
    overflow_step = zero_worker.OVERFLOW_SAMPLE // (2 * zero_worker.CASES[case][1])
    for log in (single, *ranks):
        assert [s["finite"] for s in log["log"]] == [i != overflow_step for i in range(zero_worker.STEPS)]
    # the skip lowered the scale identically everywhere (window 2: it had grown once before)
    scales = [[s["next_scale"] for s in log["log"]] for log in (single, *ranks)]
    assert scales[0] == scales[1] == scales[2] and scales[0][overflow_step] == scales[0][overflow_step - 1] / 2
    for log in ranks:  # every rank logs the mean loss over both
        np.testing.assert_allclose([s["loss"] for s in log["log"]], [s["loss"] for s in single["log"]], rtol=1e-5)


@pytest.mark.slow
def test_clipping_was_active_in_the_compared_runs(runs):
    clipped = _state(runs / "one" / f"stage2_at{zero_worker.STEPS}.npz")
    free = _state(runs / "one" / f"stage2_noclip_at{zero_worker.STEPS}.npz")
    assert max(float(np.abs(clipped[k] - free[k]).max()) for k in clipped if k.startswith("trainable/")) > 1e-3


@pytest.mark.slow
def test_optimizer_state_per_rank_halves(runs):
    params = [int(np.prod(s)) for s in zero_worker.SHAPES.values()]
    whole = 2 * 4 * sum(params)  # two float32 moments
    sliced = 2 * 4 * sum(-(-n // 2) for n in params)
    for case, (stage, _, _) in zero_worker.CASES.items():
        assert _log(runs / "one", case, 0)["state_bytes"] == whole
        held = [_log(runs / "two", case, r)["state_bytes"] for r in (0, 1)]
        assert held == ([whole, whole] if stage == 0 else [sliced, sliced])
    assert sliced <= whole / 2 + 2 * 4 * len(params)  # half, up to one padding element per tensor


@pytest.mark.slow
@pytest.mark.parametrize("resumed", ["two_to_one", "one_to_two", "two_to_two"])
def test_resume_into_another_world_size_continues_equal(runs, resumed):
    for case in zero_worker.CASES:
        one = _state(runs / "one" / f"{case}_at{zero_worker.STEPS}.npz")
        other = _state(runs / resumed / f"{case}_at{zero_worker.STEPS}.npz")
        for k in one:
            np.testing.assert_allclose(other[k], one[k], rtol=0, atol=1e-6, err_msg=f"{resumed} {case}: {k}")
