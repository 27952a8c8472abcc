"""Per-process backend choices of ``backend.setup_device``, checked in fresh processes (this one set its own in
conftest.py)."""
import subprocess
import sys

import pytest

from tests.helpers import REPO

PROBE = ("from exvideo_ms import backend; from mindspore._c_expression import RuntimeConf; "
         "backend.setup_device('CPU', mode={mode}); print(RuntimeConf.get_instance().is_launch_blocking())")


@pytest.mark.parametrize("mode,blocking", [(1, "True"), (0, "False")])
def test_pynative_cpu_processes_launch_ops_synchronously_graph_mode_ones_do_not(mode, blocking):
    r = subprocess.run([sys.executable, "-c", PROBE.format(mode=mode)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == blocking
