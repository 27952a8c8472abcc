"""Per-process backend choices of ``backend.setup_device``, checked in fresh processes (this one set its own in
conftest.py)."""
import subprocess
import sys

import pytest

from tests.helpers import REPO

PROBE = ("from exvideo_ms import backend; from mindspore._c_expression import RuntimeConf; "
         "backend.setup_device('CPU', mode={mode}); print(RuntimeConf.get_instance().is_launch_blocking())")


@pytest.mark.parametrize("mode", [0, 1])
def test_cpu_processes_launch_ops_synchronously_in_both_modes(mode):
    r = subprocess.run([sys.executable, "-c", PROBE.format(mode=mode)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == "True"
