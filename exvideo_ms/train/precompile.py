"""Compile the train step in a short-lived child process before training (``--environment.precompile``).

A process that compiles a graph keeps compilation's own memory: the mid-size exvideo step peaked at 7.73 GiB in a
cold process and at 5.54 GiB over a warm compile cache (docs/benchmarks.md, "Training step's first call with a
compile cache"). MindSpore can compile a graph into the compile cache without running it when
``MS_DEV_PRECOMPILE_ONLY`` is set (the call then returns nothing). So the child builds the run as the trainer
does, compiles its first step's graph into the run's compile-cache folder and exits; the training process then
finds that folder warm and never holds compilation's memory. Measured (bench_train --compile_cache): 0.92 of the
cold first step's time, no process above 0.99x PyTorch's peak RSS where one cold process reached 1.35x.

The child writes nothing into the run folder (the parent has checked and prepared it) and loads only the first
batch. One process only: under msrun every rank would need its own child.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import resource
import sys
import traceback

from exvideo_ms import cli, validate

logger = logging.getLogger(__name__)

PRECOMPILE_ONLY = "MS_DEV_PRECOMPILE_ONLY"  # MindSpore: compile graphs into the compile cache, do not run them


def check(env) -> None:
    """--environment.precompile needs graph mode, the compile cache and a single process."""
    if not env.precompile:
        return
    if env.mode != 0:
        raise validate.OptionError(f"--environment.precompile compiles the graph-mode train step; --environment.mode "
                                   f"is {env.mode} (PyNative)")
    if env.compile_cache is None:
        raise validate.OptionError("--environment.precompile hands the compiled step over through the compile cache; "
                                   "--environment.compile_cache is null")
    if env.distributed:
        raise validate.OptionError("--environment.precompile runs one compiling process; it does not work with "
                                   "--environment.distributed (msrun)")


def precompile(model_opts, train, env) -> None:
    """Compile the run's train step into its compile-cache folder in a child process, and wait for it. An error
    in the child is raised here as the same exception (bad input exits 2 with its message, as without the
    option)."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(model_opts, train, env, send),
                            name="exvideo-ms-precompile")
    logger.info("compiling the train step in a child process (--environment.precompile)")
    child.start()
    send.close()  # the child holds the only sending end: a child that dies unannounced gives EOF, not a hang
    try:
        failure = receive.recv() if receive.poll(None) else None
    except EOFError:
        failure = None
    child.join()
    if failure is not None:
        blob, summary, text = failure
        error = None
        if blob is not None:
            try:
                error = pickle.loads(blob)
            except Exception:  # it pickled in the child but does not unpickle here
                pass
        if error is None:  # an exception that does not cross processes: its type and message
            error = RuntimeError(f"--environment.precompile: the compiling child process failed: {summary}")
        if not isinstance(error, cli.user_errors()):  # a bug: its traceback from the child
            logger.error("the compiling child process failed:\n%s", text)
        raise error
    if child.exitcode != 0:
        raise RuntimeError(f"--environment.precompile: the compiling child process exited with code {child.exitcode} "
                           f"without an error message; without --environment.precompile this process compiles")
    # the largest peak of this process's finished children (Linux reports KiB): the compiling child's
    logger.info("the compiling child process peaked at %.0f MiB RSS",
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0)


def _child(model_opts, train, env, send) -> None:
    """The child's body; its exception, with the traceback as text, goes to the parent."""
    try:
        _compile_only(model_opts, train, env)
    except BaseException as e:
        try:
            blob = pickle.dumps(e)
        except Exception:  # the parent raises its type and message instead
            blob = None
        send.send((blob, f"{type(e).__name__}: {e}", traceback.format_exc()))
        sys.exit(1)
    finally:
        send.close()


def _compile_only(model_opts, train, env) -> None:
    from exvideo_ms.train.trainer import Trainer
    Trainer(model_opts, train, env, compile_only=True).compile_step(os.environ)
