"""What every command line of this project does the same way: its parser (one-line help for every option,
choices shown, examples kept on their lines, no abbreviations, no repeated flags), exit code 2 with one line
naming the problem, clean-up on Ctrl-C and SIGTERM, and MindSpore's failure dumps kept out of the user's
working directory.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Tuple, Type

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
# folders MindSpore writes into the working directory when a graph fails to compile (analyze_fail.ir ...)
MINDSPORE_DUMPS = ("rank_0", "kernel_meta")


class CommandError(ValueError):
    """A command-line input that cannot be used (exit code 2)."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that every clean-up block runs."""


def parser(description: str):
    """A jsonargparse parser whose dataclass options take their help from the attribute docstrings."""
    from jsonargparse import ArgumentParser, DefaultHelpFormatter, set_parsing_settings
    set_parsing_settings(docstring_parse_attribute_docstrings=True)

    class Help(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """Keeps the description's lines (examples stay one per line)."""

    return ArgumentParser(description=description, formatter_class=Help, allow_abbrev=False, exit_on_error=True)


def refuse_repeated(argv: Sequence[str], allowed: Iterable[str] = ("--config",)) -> None:
    """An option given twice would silently take the last value: refuse it, naming the option."""
    seen = set()
    for token in argv:
        if not token.startswith("--"):
            continue
        name = token.split("=", 1)[0]
        if name in seen and name not in allowed:
            raise CommandError(f"{name} is given more than once (only the last would count); give it once, "
                               f"with a YAML list where the option takes several values: {name} '[a, b]'")
        seen.add(name)


def user_errors() -> Tuple[Type[BaseException], ...]:
    """The exceptions that mean bad input rather than a bug: exit code 2 with their message (dataset, option
    and device errors are ValueErrors too)."""
    from exvideo_ms.checkpoint import CheckpointError
    from exvideo_ms.config import ConfigError
    from exvideo_ms.media import MediaError
    from exvideo_ms.settings import SettingsError
    return (CommandError, CheckpointError, ConfigError, MediaError, SettingsError, ValueError)


@contextlib.contextmanager
def mindspore_dumps_kept_out(cwd: Path = None):
    """MindSpore writes ``rank_0/om/analyze_fail.ir`` into the working directory when a graph fails, whatever
    its save_graphs settings (measured with 2.8.0). Folders of that kind that appear while the block runs are
    moved to ``~/.cache/exvideo_ms/mindspore_dumps/<time>/`` and named in the log."""
    from exvideo_ms.backend import user_cache_dir
    cwd = Path(cwd or os.getcwd())
    before = {name for name in MINDSPORE_DUMPS if (cwd / name).exists()}
    try:
        yield
    finally:
        new = [cwd / name for name in MINDSPORE_DUMPS if name not in before and (cwd / name).exists()]
        if new:
            target = user_cache_dir("mindspore_dumps") / time.strftime("%Y%m%d-%H%M%S") / str(os.getpid())
            target.mkdir(parents=True, exist_ok=True)
            for path in new:
                shutil.move(str(path), str(target / path.name))
            logger.info("MindSpore's diagnostic files moved to %s", target)


def run(main: Callable[[], object]) -> int:
    """Run a command: 0 on success, 2 with ``error: <message>`` for bad input, 130 when interrupted (every
    clean-up block has run). SIGTERM is turned into the same interrupt as Ctrl-C."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        raise Interrupted(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (tests calling main directly): leave SIGTERM alone
        previous = None
    try:
        with mindspore_dumps_kept_out():
            main()
    except KeyboardInterrupt:
        print("interrupted: nothing partial was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def command(argv: Optional[Sequence[str]], build_parser: Callable, action: Callable) -> int:
    """Parse ``argv`` (default: sys.argv) with ``build_parser()`` — refusing repeated options first — and
    ``run`` ``action(args)``."""
    from exvideo_ms.config import instantiate
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        refuse_repeated(argv)
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    p = build_parser()
    args = instantiate(p, p.parse_args(argv))
    return run(lambda: action(args))
