"""Run a project script with only the packages a runtime-only install has: those of exvideo-ms's dependencies
without extras, and theirs (as installed here), linked into a folder that is the interpreter's only
site-packages (``python -S``). Anything the test extras alone bring (torch, diffusers, open_clip, ...) is then
absent to the script, to ``import`` and ``importlib.util.find_spec`` alike, as in ``bash scripts/setup.sh``'s
venv; the project itself comes from the checkout.

    python tests/runtime_only.py SITE_DIR SCRIPT [ARGS ...]
"""
import importlib.metadata as metadata
import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

PROJECT = "exvideo-ms"
REPO = Path(__file__).resolve().parents[1]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(root: str = PROJECT) -> set:
    """Canonical names of ``root`` and every distribution its non-extra requirements reach, as installed."""
    seen, todo = set(), [root]
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # a requirement that is not installed cannot be imported either
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def link_site(dest: Path, allowed: set) -> set:
    """Symlink every top-level file or folder of the allowed distributions (their packages, bundled libraries
    and .dist-info) into ``dest``; returns the names of the distributions linked."""
    dest.mkdir(parents=True, exist_ok=False)
    linked = set()
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"])
        if name not in allowed or name == PROJECT or not dist.files:
            continue
        for top in {f.parts[0] for f in dist.files if not f.parts[0].startswith("..")}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (dest / top).exists() and not top.endswith(".pth"):
                os.symlink(source, dest / top)
        linked.add(name)
    return linked


def run(site: Path, script: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    linked = link_site(site, runtime_closure())
    code = ("import runpy, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; script = sys.argv[3]; "
            "sys.argv = sys.argv[3:]; runpy.run_path(script, run_name='__main__')")
    r = subprocess.run([sys.executable, "-S", "-c", code, str(site), str(REPO), script, *args], capture_output=True,
                       text=True, **kwargs)
    r.linked = linked
    return r


if __name__ == "__main__":
    result = run(Path(sys.argv[1]), *sys.argv[2:])
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.exit(result.returncode)
