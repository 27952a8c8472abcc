"""exvideo_ms/allocator.py: a command relaunches itself with MindSpore's bundled jemalloc (same pid, arguments
and environment), unless told not to or the user preloaded an allocator; a bad EXVIDEO_MS_ALLOCATOR is refused."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exvideo_ms import allocator
from exvideo_ms.allocator import JEMALLOC_CONF, RELAUNCHED, VARIABLE, AllocatorError, plan

LIB = Path("/ms/lib/libjemalloc.so.2")


def test_default_plan_preloads_jemalloc_before_the_users_preload_and_keeps_the_rest():
    env, why, ours = plan({"PATH": "/bin", "LD_PRELOAD": "/usr/lib/libgomp.so.1"}, LIB, "linux")
    assert env == {"PATH": "/bin", "LD_PRELOAD": f"{LIB}:/usr/lib/libgomp.so.1", "MALLOC_CONF": JEMALLOC_CONF,
                   RELAUNCHED: "1"}
    assert why == f"jemalloc ({LIB})" and ours
    env, _, _ = plan({"MALLOC_CONF": "narenas:2"}, LIB, "linux")
    assert env["LD_PRELOAD"] == str(LIB) and env["MALLOC_CONF"] == "narenas:2"  # the user's jemalloc settings win


# ours: jemalloc is this project's to load, so relaunch warns when it is not loaded
@pytest.mark.parametrize("environ, library, platform, reason, ours", [
    ({VARIABLE: "system"}, LIB, "linux", "EXVIDEO_MS_ALLOCATOR=system", False),
    ({RELAUNCHED: "1", "LD_PRELOAD": str(LIB)}, LIB, "linux", f"relaunched with LD_PRELOAD={LIB}", True),  # once
    ({"LD_PRELOAD": "/opt/libtcmalloc.so"}, LIB, "linux", "(tcmalloc), as set", False),
    ({"LD_PRELOAD": "/x/libjemalloc.so"}, LIB, "linux", "(jemalloc), as set", False),
    ({}, LIB, "darwin", "this is darwin", True),
    ({}, None, "linux", "no mindspore/lib/libjemalloc.so.2", True),
])
def test_plan_goes_on_as_is_and_says_why(environ, library, platform, reason, ours):
    p = plan(environ, library, platform)
    assert p.env is None and reason in p.why and p.ours is ours


def test_unknown_allocator_is_refused_naming_the_variable_and_the_choices():
    with pytest.raises(AllocatorError, match=r"EXVIDEO_MS_ALLOCATOR='tcmalloc' .*\('jemalloc', 'system'\)"):
        plan({VARIABLE: "tcmalloc"}, LIB, "linux")


def test_the_pinned_mindspore_wheel_ships_jemalloc():
    path = allocator.bundled_jemalloc()
    assert path is not None and path.name == "libjemalloc.so.2" and path.parent.parent.name == "mindspore"


SCRIPT = """import os, sys
from exvideo_ms import allocator
print("start", os.getpid(), allocator.active(), flush=True)
allocator.relaunch()
print("end", os.getpid(), allocator.active(), sys.argv[1:], os.environ.get("MALLOC_CONF"), flush=True)
"""


def run_script(tmp_path, **env):
    script = tmp_path / "command.py"
    script.write_text(SCRIPT)
    environ = {k: v for k, v in os.environ.items()
               if k not in (VARIABLE, RELAUNCHED, "LD_PRELOAD", "MALLOC_CONF")}
    return subprocess.run([sys.executable, str(script), "a", "b c"], capture_output=True, text=True,
                          env={**environ, **env})


def test_relaunch_replaces_the_process_by_the_same_command_with_jemalloc(tmp_path):
    r = run_script(tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    pid = lines[0].split()[1]
    assert lines[:3] == [f"start {pid} system", f"start {pid} jemalloc",
                         f"end {pid} jemalloc ['a', 'b c'] {JEMALLOC_CONF}"]


def test_relaunch_keeps_the_system_allocator_when_asked(tmp_path):
    r = run_script(tmp_path, **{VARIABLE: "system"})
    pid = r.stdout.split()[1]
    assert r.returncode == 0
    assert r.stdout.split("\n")[:2] == [f"start {pid} system", f"end {pid} system ['a', 'b c'] None"]


def test_bad_allocator_stops_the_command_with_exit_2_before_anything_runs(tmp_path):
    r = run_script(tmp_path, **{VARIABLE: "glibc"})
    assert r.returncode == 2 and "end" not in r.stdout
    assert r.stderr.strip() == ("error: EXVIDEO_MS_ALLOCATOR='glibc' is not an allocator this project knows; "
                                "use one of ('jemalloc', 'system') (unset: jemalloc)")


@pytest.mark.parametrize("environ, warned", [
    ({}, True),  # wanted, and this wheel has none: the warning names why
    ({VARIABLE: "system"}, False),  # asked for
    ({"LD_PRELOAD": "/opt/libtcmalloc.so"}, False),  # the user's own
])
def test_relaunch_warns_when_jemalloc_was_wanted_but_is_not_there(environ, warned, monkeypatch, caplog):
    for key in (VARIABLE, RELAUNCHED, "LD_PRELOAD"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(allocator, "bundled_jemalloc", lambda: None)
    with caplog.at_level("WARNING", logger="exvideo_ms.allocator"):
        allocator.relaunch()  # returns: nothing to relaunch with
    messages = [r.getMessage() for r in caplog.records]
    if warned:
        assert messages == ["jemalloc is not loaded (system allocator: this MindSpore wheel has no "
                            "mindspore/lib/libjemalloc.so.2 (compiled graphs keep about 1.5x the host memory; see "
                            "exvideo_ms/allocator.py)); running with the system allocator"]
    else:
        assert messages == []
