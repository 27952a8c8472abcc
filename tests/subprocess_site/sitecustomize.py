"""Run by every Python process the tests start (tests/conftest.py puts this folder first on PYTHONPATH): once the
process imports exvideo_ms.backend, MindSpore's CPU kernel threads are set to one, as conftest sets them for the
test processes themselves. MindSpore's default is 25; with the tests' tiny models one thread is faster, most of
all beside the other test worker (measured, image_to_video.py on the tiny converted model, 4 frames, 2 steps,
PyNative: alone 17.5 s with the default, 13.4 s with one thread; two runs at once 43.1 s and 29.5 s). Only the
tests do this: the bundled demo's own command is slower with one thread (31.6 s against 27.3 s)."""
import importlib.abc
import sys


class _OneKernelThread(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "exvideo_ms.backend":
            sys.meta_path.remove(self)
            import mindspore
            mindspore.device_context.cpu.op_tuning.threads_num(1)
        return None  # the import itself goes on as usual


sys.meta_path.insert(0, _OneKernelThread())
