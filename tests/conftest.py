"""Shared fixtures: a tiny random SVD built with diffusers/transformers (SVD-XT's block structure, small
widths), saved as a diffusers folder, converted once per session, and loaded into our MindSpore cells."""
import logging
import os

import pytest

os.environ.setdefault("GLOG_v", "3")  # MindSpore C++ warnings off

import mindspore as ms  # noqa: E402

from exvideo_ms import backend  # noqa: E402
from tests import references  # noqa: E402


def pytest_configure(config):
    # the CPU and PyNative as every CPU process of the package sets them up (ops launched synchronously: the
    # reason at backend.CPU_LAUNCH_BLOCKING)
    backend.setup_device("CPU", mode=1)
    # one CPU kernel thread per test process (MindSpore's default is 25, op_tuning.threads_num's docstring): the
    # tiny test models gain nothing from more, and two workers' 50 threads on 2 cores lose to oversubscription.
    # Measured on tests/test_temporal_windows.py: alone 38 s with 1 thread, 43 s with 2 or 25; two copies at
    # once 78 s with 1 thread, 107-113 s with 2 or 25
    ms.device_context.cpu.op_tuning.threads_num(1)
    logging.getLogger("mindspore").setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def _pynative_by_default():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture(scope="session")
def torch_models():
    unet, vae, clip = references.tiny_torch_models()
    return unet, vae, clip


@pytest.fixture(scope="session")
def diffusers_folder(torch_models, tmp_path_factory):
    return references.save_diffusers_folder(tmp_path_factory.mktemp("tiny") / "tiny-svd", *torch_models)


@pytest.fixture(scope="session")
def converted(diffusers_folder, tmp_path_factory):
    """(ckpt path, yaml path) of the tiny diffusers folder converted by our converter."""
    from exvideo_ms.convert.converter import convert
    out = tmp_path_factory.mktemp("converted") / "tiny.ckpt"
    convert([diffusers_folder], out, progress=False)
    return out, out.with_suffix(".yaml")


@pytest.fixture(scope="session")
def tiny_cfg(converted):
    from exvideo_ms.config import load_config
    return load_config(converted[1])


@pytest.fixture(scope="session")
def ms_model(converted, tiny_cfg):
    from exvideo_ms.checkpoint import load_checkpoint
    from exvideo_ms.models.svd import build_model
    model = build_model(tiny_cfg)
    load_checkpoint(model, converted[0])
    return model


@pytest.fixture(scope="session")
def aligned_unet(torch_models):
    """The diffusers UNet with its ResBlock GroupNorm eps set to the original 1e-5."""
    import copy
    unet = copy.deepcopy(torch_models[0])
    references.align_unet_eps_(unet)
    return unet


# the longest files first, so that the two xdist workers (one file at a time each, pyproject addopts) finish
# together instead of one running the slowest file alone at the end (longest-processing-time-first order)
LONGEST_FIRST = ("test_train.py", "test_demo.py", "test_cli.py", "test_pipeline.py", "test_exvideo.py",
                 "test_diffsynth_parity.py", "test_compile_cache.py", "test_ascend_contracts.py", "test_zero.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: file order kept within
